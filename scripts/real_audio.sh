#!/usr/bin/env bash
# Install the real recordings the quality measurements use (Debian packages; nothing is committed):
#   espeak-ng              synthetic speech, generated on demand
#   pocketsphinx-testdata  real read speech (16 kHz WAV/raw, /usr/share/pocketsphinx/test/data)
#   colobot-common-sounds  real music (Ogg Vorbis, /usr/share/games/colobot/music)
# Needs root (apt-get). Prints the directories it installed.
set -euo pipefail
apt-get install -y -q espeak-ng pocketsphinx-testdata colobot-common-sounds >/dev/null
dpkg -L pocketsphinx-testdata colobot-common-sounds | grep -E '\.(wav|ogg)$' | xargs -n1 dirname | sort -u
