"""``python -m adasr_cli …``: the ``adasr`` console command, also what ``torchrun -m adasr_cli train`` starts."""

from adasr_cli.main import main

raise SystemExit(main())
