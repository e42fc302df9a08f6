"""`python -m keras_unikd ...` is `keras-unikd ...` (see `keras_unikd.cli`)."""

import sys

from keras_unikd.cli import main

if __name__ == "__main__":
    sys.exit(main())
