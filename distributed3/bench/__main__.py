"""``python -m distributed3.bench``: see :mod:`distributed3.bench`."""
from .main import main

main()
