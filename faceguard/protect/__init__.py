"""Protect photos one at a time: :class:`~faceguard.protect.protector.Protector` crafts the faces of
one photo through the warp a scraper's alignment applies (:mod:`.warp`); :mod:`.folder` runs it over
a photo folder into a mirrored tree with a resumable :mod:`.manifest`, photo I/O that keeps format
and metadata (:mod:`.photo`), identities (:mod:`.identities`), an HTML :mod:`.report` and the
pairwise :mod:`.verify` check."""
