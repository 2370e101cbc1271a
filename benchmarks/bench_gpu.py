"""GPU suite: ``python benchmarks/bench_gpu.py [--quick] [--repeat N] [--out DIR]`` on any CUDA machine.

Times fastencodec, Meta's ``encodec`` and ``transformers`` side by side on ``cuda``
(batch 1 at 1 to 60 s, batch 64 x 10 s, 48 kHz stereo 10 s), peak GPU memory of a
60 s encode+decode, and bfloat16/float16 quality and speed. Writes
``results_gpu.{md,json}`` and ``time_vs_length_gpu.png`` to ``--out``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite import main  # noqa: E402

if __name__ == "__main__":
    main("cuda")
