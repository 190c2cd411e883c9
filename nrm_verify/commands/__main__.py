"""``python -m nrm_verify.commands``: the ``nrm-verify`` command."""

import sys

from nrm_verify.commands.cli import main

sys.exit(main())
