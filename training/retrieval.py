"""Full-catalogue next-item retrieval (evaluation.md §1 (ii)): rank every item, no top-k cut.

The query for a target event t is the model's next-item embedding at the event before t, so the
request time is that event's time (evaluation.md §2.2 `query_time=last_event`: the model is not
told when the held-out event happened, exactly like a time-blind baseline); every
catalogue item (all vocabulary ids but PAD and OOV) is scored in chunks, and the target's rank
counts ties against it, so a constant scorer earns nothing.
"""

from __future__ import annotations

import numpy as np
import torch

from features.dataset import SequenceDataset
from model.inputs import batch_time
from model.ranker import Ranker
from training.metrics import next_item_metrics

FIRST_ITEM_ID = 2


@torch.inference_mode()
def next_item_ranks(model: Ranker, dataset: SequenceDataset, batch_size: int = 256,
                    exclude_seen: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(rank of each target item, its user) over the split's targets that have a previous event."""
    model.eval()
    device = next(model.parameters()).device
    catalogue = model.catalogue_embeddings()[FIRST_ITEM_ID:]
    ranks, users = [], []
    for start in range(0, len(dataset), batch_size):
        batch = dataset.__getitems__(np.arange(start, min(start + batch_size, len(dataset)))).to(device)
        hidden = model.encode(batch.item, batch.categorical, batch.action, batch_time(batch), batch.mask).hidden
        rows = batch.target[:, 1:] & batch.mask[:, 1:]
        if not rows.any():
            continue
        queries = model.next_item_embeddings(hidden[:, :-1][rows]).float()
        targets = batch.item[:, 1:][rows] - FIRST_ITEM_ID
        scores = queries @ catalogue.float().T
        if exclude_seen:  # drop items already in the query's history (HSTU's protocol), never the target
            window, position = rows.nonzero(as_tuple=True)
            history = batch.item[window] - FIRST_ITEM_ID
            before = torch.arange(history.shape[1], device=device)[None, :] <= position[:, None]
            seen = torch.zeros_like(scores, dtype=torch.bool)
            seen.scatter_(1, history.clamp(min=0), before & batch.mask[window] & (history >= 0))
            seen[torch.arange(len(targets)), targets] = False
            scores = scores.masked_fill(seen, float("-inf"))
        target_scores = scores[torch.arange(len(targets)), targets]
        better = (scores > target_scores[:, None]).sum(1)
        tied_others = (scores == target_scores[:, None]).sum(1) - 1
        ranks.append((1 + better + tied_others).cpu().numpy())
        owner = rows.nonzero(as_tuple=True)[0].cpu().numpy()
        users.append(np.asarray(batch.users, dtype=object)[owner])
    join = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)  # noqa: E731
    return join(ranks, np.int64), join(users, object)


def retrieval_report(model: Ranker, dataset: SequenceDataset, exclude_seen: bool = False) -> dict:
    ranks, users = next_item_ranks(model, dataset, exclude_seen=exclude_seen)
    report = next_item_metrics(ranks)
    report.update(catalogue_size=model.config.item_vocab_size - FIRST_ITEM_ID, exclude="seen" if exclude_seen else "none",
                  query_time="last_event")
    report["per_query"] = ranks
    report["users"] = users
    return report
