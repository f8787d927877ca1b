"""``python -m napari_dsp.cli``: the ``napari-dsp`` command."""

import sys

from . import main

sys.exit(main())
