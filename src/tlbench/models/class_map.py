"""``as_is``: use the pretrained classifier, mapping each target class to source (ImageNet) classes.

A target's logit is the log-sum-exp of its source classes' logits, i.e. the log of their total
probability mass before renormalising over the target classes; prediction is the arg-max.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import torch
from timm.data import ImageNetInfo, infer_imagenet_subset
from torch import nn

from tlbench.errors import ModelError


def resolve_class_map(
    class_map: Mapping[str, Sequence[str]], *, target_classes: Sequence[str], model: nn.Module
) -> list[list[int]]:
    """Source-class indices per target class, in ``target_classes`` order."""
    missing = [c for c in target_classes if c not in class_map]
    if missing:
        raise ModelError(
            f"strategy.class_map has no entry for target class(es) {missing}; dataset classes: "
            f"{list(target_classes)}. Add e.g. strategy.class_map='{{{missing[0]}: [<ImageNet class>]}}'"
        )
    subset = infer_imagenet_subset(model)
    if subset is None:
        raise ModelError(
            "as_is needs a backbone whose classifier is an ImageNet classifier (label set unknown)"
        )
    info = ImageNetInfo(subset)
    return [[_source_index(entry, info, target) for entry in class_map[target]] for target in target_classes]


def _source_index(entry: str | int, info: ImageNetInfo, target: str) -> int:
    text = str(entry).strip()
    if text.isdigit():
        index = int(text)
        if not 0 <= index < info.num_classes():
            raise ModelError(f"class_map[{target}]: index {index} outside 0..{info.num_classes() - 1}")
        return index
    names = info.label_names()
    if text in names:
        return names.index(text)
    lowered = text.lower()
    matches = [
        i
        for i in range(info.num_classes())
        if lowered in (s.strip().lower() for s in info.index_to_description(i).split(","))
    ]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        options = [f"{i}: {info.index_to_description(i)}" for i in matches]
        raise ModelError(f"class_map[{target}]: '{text}' is ambiguous ({options}); use the index")
    close = near_labels(text, info)
    hint = f"Close matches: {', '.join(close)}" if close else "No close match: give a class index 0..999"
    raise ModelError(f"class_map[{target}]: no {info.num_classes()}-class label '{text}'. {hint}")


def near_labels(text: str, info: ImageNetInfo, *, n: int = 3) -> list[str]:
    """Labels near ``text``, each as ``'name' (index: its synonyms)``, nearest first.

    A label's description is a list of synonyms ("ant, emmet, pismire"); a typo is compared with
    each synonym, not with the whole list, which a short word never resembles ("antt" -> "ant").
    Words that merely contain the text ("retriever" -> "golden retriever") come after close spellings.
    """
    synonyms: dict[str, int] = {}
    for index in range(info.num_classes()):
        for name in info.index_to_description(index).split(","):
            synonyms.setdefault(name.strip().lower(), index)
    lowered = text.strip().lower()
    close = difflib.get_close_matches(lowered, list(synonyms), n=n, cutoff=0.6)
    containing = [name for name in synonyms if lowered and lowered in name.split() and name not in close]
    picked: dict[int, str] = {}  # one entry per class: 'tabby' and 'tabby cat' are the same one
    for name in [*close, *containing]:
        index = synonyms[name]
        if len(picked) < n and index not in picked:
            picked[index] = f"'{name}' ({index}: {info.index_to_description(index)})"
    return list(picked.values())


class ClassMapHead(nn.Module):
    """Source logits -> target logits (log-sum-exp over each target's source classes)."""

    def __init__(self, source_indices: Sequence[Sequence[int]]) -> None:
        super().__init__()
        flat = [i for group in source_indices for i in group]
        owner = [t for t, group in enumerate(source_indices) for _ in group]
        self.flat: torch.Tensor
        self.owner: torch.Tensor
        self.register_buffer("flat", torch.tensor(flat, dtype=torch.long), persistent=False)
        self.register_buffer("owner", torch.tensor(owner, dtype=torch.long), persistent=False)
        self.num_targets = len(source_indices)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        picked = logits.float().index_select(1, self.flat)
        out = torch.full((logits.shape[0], self.num_targets), float("-inf"), device=logits.device)
        # logsumexp per target group, stable: subtract the per-row max first.
        shift = picked.max(dim=1, keepdim=True).values
        sums = torch.zeros_like(out).index_add_(1, self.owner, (picked - shift).exp())
        return torch.where(sums > 0, sums.log() + shift, out)
