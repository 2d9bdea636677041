"""Model pieces the recipes build on the backbone (the utterance-level task heads)."""
