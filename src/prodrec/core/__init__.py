"""The bottom layer: words, checks and plumbing every other layer uses.

Lives here: the fixed vocabulary (:mod:`.vocab`: fusion modes, protocols, engines, calibrations, index
kinds), argument checks that run before any work (:mod:`.params`), the error family (:mod:`.errors`),
atomic writes, strict JSON, locks and fingerprints (:mod:`.io`), network probes (:mod:`.net`),
provenance records (:mod:`.provenance`) and returning freed memory to the system (:mod:`.memory`).

May import: nothing of prodrec but ``prodrec._version``.
"""
