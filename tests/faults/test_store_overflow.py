"""A value that float16 cannot hold stops the harvest with a message naming the hook and the fix,
instead of landing in the store as inf."""

import pytest
import torch

from pipeline.harvest import _rows


def test_float16_overflow_is_an_error_not_inf():
    acts = torch.zeros(1, 4, 3)
    acts[0, 2, 1] = 70000.0  # above float16's 65504
    scored = torch.tensor([[False, True, True, True]])
    with pytest.raises(ValueError, match=r"blocks\.17\.hook_resid_post.*float16.*7e\+04.*harvest\.store_dtype=float32"):
        _rows(acts, scored, torch.float16, "blocks.17.hook_resid_post")
    assert _rows(acts, scored, torch.float32, "blocks.17.hook_resid_post")[1, 1] == 70000.0


def test_the_model_overflowing_is_named_as_such():
    acts = torch.full((1, 2, 3), float("inf"), dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="model's output"):
        _rows(acts, torch.tensor([[True, True]]), torch.float32, "blocks.1.hook_resid_post")
