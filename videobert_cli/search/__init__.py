"""Search over extracted features: ``search.engine.search`` (text or moment queries), the moment
unit and merging rule (``search.moments``), the corpus read from files or an index
(``search.corpus``) and the shared spaces (``search.spaces``). Documented in docs/search.md.

This package module imports nothing: ``store.index`` imports ``search.files`` while it loads.
"""
