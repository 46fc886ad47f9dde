"""``lm-lora``: causal language-model LoRA fine-tuning on a participant's JSONL text.

The base model is a local Hugging Face directory (``config.json``, weights,
tokenizer files), the same on every node: the task's settings pin its content
hash (``training.base_model_hash``, ``flocknode.learning.base_model``) and each
participant names their copy in ``[task] base_model``. It is loaded with
``AutoModelForCausalLM.from_pretrained(dir, local_files_only=True)`` and its
tokenizer from the same directory; nothing is downloaded. LoRA adapters
(``peft``) go on the attention projections peft knows for the architecture
(``c_attn`` for GPT-2, ``q_proj``/``v_proj`` for Llama); only they are trained
and only they are exchanged: the global model is the adapters.

Data: ``.jsonl`` files in one of the loaders' formats (plain ``text``,
``instruction``/``response``, chat ``messages``; the first record decides),
each record rendered as one text (``flocknode.learning.loaders.render_jsonl``)
ending in the tokenizer's end-of-sequence token, cut to ``max_length`` tokens.
Training: ``local_steps`` mini-batches (or ``local_epochs`` passes) of mean
token cross-entropy with Adam or SGD on the adapters, seeded; evaluation:
score = minus the mean token loss on the data (higher is better), metrics
``loss`` and ``perplexity``.

transformers and peft are an extra (``pip install 'flocknode[llm]'``),
imported only when this task builds a model or reads data.

For testers, ``write_tiny_model`` saves a randomly initialised GPT-2 of two
layers and a word-level tokenizer over the synthetic corpus (``corpus``) to a
directory, deterministically, so a test cluster loads it through the same path
as a real downloaded model.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from flocknode.errors import FlockError
from flocknode.learning.loaders import jsonl_kind, load_jsonl, render_jsonl, write_jsonl
from flocknode.learning.task import DataError, Evaluation, Samples, Task
from flocknode.learning.train import _batches, _Optimizer

if TYPE_CHECKING:
    from flocknode.learning.settings import TrainingSettings

IGNORE = -100  # label of a position that takes no part in the loss (padding)
LLM_EXTRA = "pip install 'flocknode[llm]'"


class MissingExtraError(FlockError):
    """The task needs packages that are not installed (one line naming the extra)."""

    exit_code = 2


def require_llm() -> tuple[Any, Any]:
    """The ``transformers`` and ``peft`` modules, or one line naming the extra."""
    try:
        import peft
        import transformers
    except ImportError as e:
        raise MissingExtraError(
            f"task 'lm-lora' needs transformers and peft ({e.name} is missing): {LLM_EXTRA}"
        ) from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers, peft


class LMLoRA(Task):
    """LoRA on a pinned causal LM; see the module docstring."""

    name = "lm-lora"
    report_metric = "loss"  # testers' reports: held-out loss, not accuracy
    lora_rank = 4
    lora_alpha = 8
    max_length = 64
    eval_batch = 32
    # Testers' settings for ``cluster up`` on the synthetic corpus: its shards are
    # small (10 to 150 records), so a larger validation share; 20 Adam steps of 8
    # kept honest update norms at 0.75-1.29 of the step scale (under the norm
    # ceiling, 1.5) in four in-process FedAvg rounds of three of five shards, while
    # the held-out loss fell from 4.85 to 3.72 (bench/lora.py runs the cluster).
    tester_training: ClassVar[dict[str, Any]] = {
        "local_steps": 20,
        "batch_size": 8,
        "val_fraction": 0.25,
        "min_val_samples": 3,
    }
    # The voters' flag threshold. The score is minus the validation loss, so a gain
    # of -400000 ppm is an update that alone raises a voter's loss by 0.4 nats.
    # Measured on cluster up's setup (bench/lora.py --probe 4,5,6 --rounds 10
    # --seeds 0,1: 1,240 gains of each kind, an update alone on every other node's
    # validation split): honest gains min -348122, 5th percentile -207040, median
    # -72085 (they fall as the rounds go on and the adapters fit the shards; 20 rounds
    # of 5 nodes, seed 4: min -322033); sign flip and Gaussian noise gain at most
    # -465910 and -579175 from round 2 on. -400000 flagged no honest update and every
    # one of those. Not separable: in round 1 (adapters still at their start) a
    # sign-flipped update also lowers the loss (+0.48 to +0.69 nats) and noise moves
    # it by under 0.08, and a zero update's gain is exactly 0, which only a threshold
    # above 0 flags (one of 0 flagged most honest updates from round 4 on).
    settings_defaults: ClassVar[Mapping[str, Any]] = {"flag_threshold_ppm": -400_000}

    def __init__(self) -> None:
        self._base_dir: Path | None = None
        self._base: nn.Module | None = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        # the shared base moves with every model sent to a device: one at a time
        self._device_lock = threading.Lock()

    # -- the base model -------------------------------------------------------------------

    def use_base_model(self, path: Path) -> None:
        """The node's checked copy of the base model (``attach_base_model``)."""
        self._base_dir = Path(path)
        self._base = None
        self._tokenizer = None

    def _loaded(self) -> tuple[nn.Module, Any]:
        """The base model and tokenizer, read once per process (models may be large)."""
        with self._lock:
            if self._base is None:
                if self._base_dir is None:
                    raise DataError(
                        "task 'lm-lora' has no base model: set [task] base_model to its directory"
                    )
                transformers, _ = require_llm()
                d = str(self._base_dir)
                try:
                    tok = transformers.AutoTokenizer.from_pretrained(d, local_files_only=True)
                    base = transformers.AutoModelForCausalLM.from_pretrained(
                        d, local_files_only=True
                    )
                except (OSError, ValueError, KeyError) as e:
                    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    raise DataError(f"{d}: cannot load the base model: {first}") from None
                if tok.pad_token_id is None:
                    tok.pad_token = tok.eos_token
                base.requires_grad_(False)
                self._base, self._tokenizer = base, tok
            return self._base, self._tokenizer

    def _device_guard(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """Held while a model is on a device other than the CPU (its base moves too)."""
        return self._device_lock if device.type != "cpu" else contextlib.nullcontext()

    # -- the task interface ---------------------------------------------------------------

    def build_model(self) -> nn.Module:
        """The base model with fresh LoRA adapters (seeded by the caller).

        Every model built shares the base's frozen weights: the module tree is
        copied (peft replaces its target layers in the copy), the parameters
        and buffers are not, so a node holds the base once however many models
        it builds (the current global model, a proposer's, each voter's
        candidate). Nothing writes them: they take no gradient, and a model's
        state (``exchanged``) is its adapters only.
        """
        _, peft = require_llm()
        base, _ = self._loaded()
        shared: dict[int, Any] = {id(t): t for t in (*base.parameters(), *base.buffers())}
        config = peft.LoraConfig(
            r=self.lora_rank,
            lora_alpha=self.lora_alpha,
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():
            # peft notes that GPT-2's fused projection needs fan_in_fan_out and sets it
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            model: nn.Module = peft.get_peft_model(copy.deepcopy(base, shared), config)
        return model

    def exchanged(self, model: nn.Module) -> list[str]:
        """The adapters: the model's trainable parameters (the base is frozen)."""
        return [name for name, p in model.named_parameters() if p.requires_grad]

    def load_data(self, path: Path) -> Samples:
        """Token ids ``x`` (n, L) and labels ``y`` (n, L; padding is ``IGNORE``), L the
        longest record's token count (at most ``max_length``)."""
        records = load_jsonl(path, "auto")
        kind = jsonl_kind(records[0])
        _, tok = self._loaded()
        return self.tokenize([render_jsonl(r, kind) for r in records], tok, path)

    def tokenize(self, texts: Sequence[str], tok: Any, path: Path) -> Samples:
        eos = tok.eos_token or ""
        enc = tok(
            [t + eos for t in texts],
            max_length=self.max_length,
            truncation=True,
            padding="longest",
            return_attention_mask=True,
        )
        ids = torch.tensor(enc["input_ids"], dtype=torch.int64)
        mask = torch.tensor(enc["attention_mask"], dtype=torch.int64)
        labels = ids.masked_fill(mask == 0, IGNORE)
        if int((labels != IGNORE).sum(dim=1).min()) < 2:
            raise DataError(f"{path}: a record gives fewer than 2 tokens")
        return Samples(ids, labels)

    def train(
        self,
        model: nn.Module,
        data: Samples,
        settings: TrainingSettings,
        seed: int,
        device: torch.device,
    ) -> dict[str, float]:
        n = len(data)
        if n == 0:
            raise ValueError("no training samples")
        params = [p for p in model.parameters() if p.requires_grad]
        opt = _Optimizer(params, settings.optimizer, settings.learning_rate, settings.momentum)
        gen = torch.Generator().manual_seed(seed)
        batches = _batches(n, settings.batch_size, settings.local_steps, settings.local_epochs, gen)
        with self._device_guard(device):
            model.to(device)
            model.train()
            loss = torch.zeros(())
            with torch.random.fork_rng(devices=[]):  # any dropout draws from the seed
                torch.manual_seed(seed)
                # a parameter's gradient lives until its update
                with contextlib.closing(opt), opt.in_backward():
                    for idx in batches:
                        for p in params:
                            p.grad = None
                        x, y = data.x[idx].to(device), data.y[idx].to(device)
                        loss = _lm_loss(model, x, y)[0]
                        opt.begin()
                        loss.backward()
            model.to("cpu")
        return {"final_loss": float(loss.detach()), "samples": float(n)}

    def evaluate(self, model: nn.Module, data: Samples, device: torch.device) -> Evaluation:
        """Minus the mean token loss over every labelled position of ``data``."""
        n = len(data)
        if n == 0:
            return Evaluation(0.0, 0, {"loss": math.nan})
        with self._device_guard(device):
            model.to(device)
            model.eval()
            total, tokens = 0.0, 0
            with torch.no_grad():
                for start in range(0, n, self.eval_batch):
                    x = data.x[start : start + self.eval_batch].to(device)
                    y = data.y[start : start + self.eval_batch].to(device)
                    mean, count = _lm_loss(model, x, y)
                    total += float(mean) * count
                    tokens += count
            model.to("cpu")
        loss = total / tokens
        return Evaluation(-loss, n, {"loss": loss, "perplexity": math.exp(min(loss, 50.0))})

    # -- testers --------------------------------------------------------------------------

    def reference_data(self) -> Samples:
        """The synthetic corpus: ``x`` the records' JSON bytes (n, width; zero padded),
        ``y`` the record's template (what the test cluster's non-IID split follows)."""
        records, kinds = corpus()
        raw = [json.dumps(r, sort_keys=True).encode("utf-8") for r in records]
        width = max(len(b) for b in raw)
        x = np.zeros((len(raw), width), dtype=np.uint8)
        for i, b in enumerate(raw):
            x[i, : len(b)] = np.frombuffer(b, dtype=np.uint8)
        return Samples(torch.from_numpy(x), torch.tensor(kinds, dtype=torch.int64))

    def write_data(self, path: Path, data: Samples) -> None:
        rows = data.x.numpy()
        records = [json.loads(bytes(r).rstrip(b"\0").decode("utf-8")) for r in rows]
        write_jsonl(path / "train.jsonl", records)

    def write_base_model(self, path: Path) -> None:
        """Testers: the tiny random model ``cluster up`` and the tests start from."""
        write_tiny_model(path)


def _lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over labelled positions, and how many there were."""
    mask = (y != IGNORE).to(torch.int64)
    logits = model(input_ids=x, attention_mask=mask).logits
    target = y[:, 1:]
    count = int((target != IGNORE).sum())
    loss = nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        target.reshape(-1),
        ignore_index=IGNORE,
    )
    return loss, count


# -- testers: the synthetic corpus and the tiny model ---------------------------------------

_COLOURS = ("red", "green", "blue", "yellow", "black", "white", "brown", "pink")
_THINGS = (
    "apple", "leaf", "sky", "sun", "night", "snow", "chocolate", "flamingo", "cherry", "grass",
    "sea", "banana", "coal", "cloud", "bear", "rose", "tomato", "frog", "river", "lemon", "crow",
    "milk", "wood", "pig", "blood", "lime", "jeans", "corn", "ink", "salt", "soil", "candy",
)  # fmt: skip
_ANIMALS = (
    "dog", "cat", "cow", "duck", "sheep", "owl", "lion", "frog", "horse", "bee", "pig", "mouse",
    "snake", "goat", "wolf", "crow",
)  # fmt: skip
_SOUNDS = (
    "woof", "meow", "moo", "quack", "baa", "hoot", "roar", "croak", "neigh", "buzz", "oink",
    "squeak", "hiss", "bleat", "howl", "caw",
)  # fmt: skip
_NUMBERS = (
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    "twenty",
)  # fmt: skip
_COLOUR_QS = ("What colour is the {}?", "Tell me the colour of the {}.", "Colour of {}?",
              "Which colour does a {} have?")  # fmt: skip
_SOUND_QS = ("What does the {} say?", "Which sound does a {} make?", "{} sound?",
             "How does a {} call?")  # fmt: skip
_NEXT_QS = ("What comes after {}?", "Which number follows {}?", "Next after {}?")


def corpus() -> tuple[list[dict[str, str]], list[int]]:
    """Templated instruction/response records with a fixed, learnable answer each, and
    each record's phrasing (one of 13 question templates: what the test cluster's
    non-IID split follows). Deterministic."""
    records: list[dict[str, str]] = []
    kinds: list[int] = []

    def add(kind: int, instruction: str, response: str) -> None:
        records.append({"instruction": instruction, "response": response})
        kinds.append(kind)

    for i, thing in enumerate(_THINGS):
        for k, q in enumerate(_COLOUR_QS):
            add(k, q.format(thing), f"The {thing} is {_COLOURS[i % len(_COLOURS)]}.")
    for animal, sound in zip(_ANIMALS, _SOUNDS, strict=True):
        for k, q in enumerate(_SOUND_QS):
            add(4 + k, q.format(animal), f"The {animal} says {sound}.")
    for a in range(len(_NUMBERS) - 2):
        for b in range(a + 2, min(a + 8, len(_NUMBERS))):
            add(8 + (b - a) % 2, f"Count from {_NUMBERS[a]} to {_NUMBERS[b]}.",
                " ".join(_NUMBERS[a : b + 1]) + ".")  # fmt: skip
    for n in range(len(_NUMBERS) - 1):
        for k, q in enumerate(_NEXT_QS):
            add(10 + k, q.format(_NUMBERS[n]), f"After {_NUMBERS[n]} comes {_NUMBERS[n + 1]}.")
    return records, kinds


def _vocabulary(texts: Sequence[str]) -> dict[str, int]:
    """Special tokens, then every word and punctuation mark of ``texts`` (sorted)."""
    import re

    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t)})
    specials = ["<|endoftext|>", "<unk>"]
    return {w: i for i, w in enumerate(specials + words)}


def write_tiny_model(path: Path, seed: int = 0) -> Path:
    """Save a random 2-layer GPT-2 (width 128) and a word-level tokenizer to ``path``.

    The same seed and package versions give the same files, byte for byte, and
    so the same ``dir_hash``. The tokenizer covers the words of ``corpus``
    (others map to ``<unk>``).
    """
    transformers, _ = require_llm()
    from tokenizers import Tokenizer, models, pre_tokenizers

    records, _ = corpus()
    vocab = _vocabulary([render_jsonl(r, "instruction") for r in records])
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
    )
    config = transformers.GPT2Config(
        vocab_size=len(vocab),
        n_positions=LMLoRA.max_length,
        n_embd=128,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path
