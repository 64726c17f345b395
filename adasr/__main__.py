"""``python -m adasr …``: the ``adasr`` console command, also what ``torchrun -m adasr train`` starts."""

from adasr.cli import main

raise SystemExit(main())
