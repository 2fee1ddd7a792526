"""Protection profiles for ``faceguard protect``: a face surrogate and its target gradient, stored
and loaded without code execution (:mod:`.store`), trained on identity folders (:mod:`.fit`); the
default profile ships beside them (``default.safetensors`` + ``default.json``)."""
