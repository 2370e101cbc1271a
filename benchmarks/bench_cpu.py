"""CPU suite: ``python benchmarks/bench_cpu.py [--quick] [--repeat N] [--out DIR]``.

Times fastencodec, Meta's ``encodec`` and ``transformers`` side by side on CPU (batch 1,
24 kHz, 1 to 60 s; 48 kHz stereo 10 s), peak RSS of a fresh process for 60 s
encode+decode, and bfloat16/float16 quality. Writes ``results_cpu.{md,json}`` and
``time_vs_length_cpu.png`` to ``--out`` (default ``benchmarks/results``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite import main  # noqa: E402

if __name__ == "__main__":
    main("cpu")
