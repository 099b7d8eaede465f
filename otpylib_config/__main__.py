"""``python -m otpylib_config``: the ``otpylib-config`` command."""

import sys

from otpylib_config.cli import main

sys.exit(main())
