"""One module per ``faceguard`` sub-command, each with ``add_arguments(parser)`` and ``run(args) -> int``.

Heavy imports stay inside ``run`` so ``faceguard --help`` is fast.
"""
