"""The ``adasr`` command, the composition root: the one package that imports the method (``adasr``), the
runtimes (``engines``), ``export`` and the call (``realtime``).

``main`` builds the parser and runs a subcommand; each group of subcommands has its module
(``model_commands``: animate, degrade; ``training_commands``: prepare, train; ``eval_command``: eval;
``export_commands``: export, build-engine; ``call_commands``: send, receive, cam, demo), and
``backend_args`` holds the --backend options and the talking head they build. Building the parser
loads no heavy library (torch, mediapipe, aiortc, onnxruntime): a subcommand imports its
implementation when it runs, so ``adasr --help`` answers at once.
"""
