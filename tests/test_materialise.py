"""`materialise` writes the same bytes whatever the environment: transformers records whether
HF_HUB_OFFLINE was set in the tokenizer's config, and a checkpoint whose hash followed it would
rerun every later stage."""

import subprocess
import sys

from tests.conftest import REPO

SCRIPT = """
import sys
from pathlib import Path
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from pipeline.config import ModelConfig
from pipeline.models import materialise

work = Path(sys.argv[1])
if not (work / "source").exists():
    vocab = {"<|endoftext|>": 0, "a": 1, "b": 2}
    core = Tokenizer(WordLevel(vocab, unk_token="<|endoftext|>"))
    core.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>").save_pretrained(work / "source")
    GPT2LMHeadModel(GPT2Config(vocab_size=3, n_embd=8, n_layer=1, n_head=2, n_positions=16)).save_pretrained(work / "source")
cfg = ModelConfig(name="tiny", source="pretrained", package=None, gguf_file=None, path=str(work / "source"))
materialise(cfg, work / sys.argv[2])
"""


def test_the_checkpoint_does_not_depend_on_hf_hub_offline(tmp_path):
    for out, offline in (("online", None), ("offline", "1")):
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        if offline:
            env["HF_HUB_OFFLINE"] = offline
        subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), out], cwd=REPO, env=env, check=True, capture_output=True)
    online, offline = tmp_path / "online", tmp_path / "offline"
    names = sorted(p.name for p in online.iterdir())
    assert names == sorted(p.name for p in offline.iterdir()) and "tokenizer_config.json" in names
    for name in names:
        assert (online / name).read_bytes() == (offline / name).read_bytes(), name
