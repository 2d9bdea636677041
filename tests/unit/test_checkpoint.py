"""Kill-safe checkpoints (s3brain.utils.checkpoint); a recipe killed mid-epoch and resumed:
``tests/integration/test_librispeech_recipe.py``."""

import pytest
import torch

from s3brain.utils.checkpoint import Checkpointer


def test_checkpoint_is_invisible_until_every_file_is_written(tmp_path):
    """A kill while saving must not leave a checkpoint that the next run would load."""

    class Exploding(torch.nn.Module):
        def state_dict(self, *args, **kwargs):
            raise KeyboardInterrupt  # the process dies half-way through a save

    model = torch.nn.Linear(2, 2)
    good = Checkpointer(tmp_path, recoverables={"model": model})
    good.save_checkpoint()
    broken = Checkpointer(tmp_path, recoverables={"model": model, "z": Exploding()})
    with pytest.raises(KeyboardInterrupt):
        broken.save_checkpoint()
    assert len(list(tmp_path.glob("CKPT+*"))) == 2  # the half-written folder exists...
    assert len(good.list_checkpoints()) == 1         # ...but is not a checkpoint
