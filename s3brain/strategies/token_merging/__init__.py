"""Token reduction between transformer blocks: merging adjacent tokens (``merging``) and
skipping the least attended ones (``adaptive_skip``), on a shared base (``base``)."""
