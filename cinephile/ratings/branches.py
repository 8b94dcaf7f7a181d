"""Scoring a few short answers after many prompts, each prompt run once: tree attention and shared prefixes.

Every answer ("Rating: 0.5" ... "Rating: 5.0") continues its prompt with a handful of tokens. Rather than one
forward pass per answer, the distinct tokens the answers need are appended to the prompt as branches of a
tree that see the prompt but not each other (``score_batch``). Prompts that begin alike (a user's prompts
share their history) run that beginning once and continue its KV cache (``shared_prefixes``,
``score_prompts``). Both are exact: in fp32 they equal one full forward pass per answer to 1e-4.
"""

from __future__ import annotations

import torch

from cinephile.batching import left_pad


def _causal(mask: torch.Tensor) -> torch.Tensor:
    """(B, T, T) allowed keys of left-padded rows: earlier non-pad tokens; a pad query sees itself (no empty row)."""
    width = mask.shape[1]
    allowed = torch.ones(width, width, dtype=torch.bool, device=mask.device).tril() & mask.bool()[:, None, :]
    return allowed | torch.eye(width, dtype=torch.bool, device=mask.device)


def _additive(allowed: torch.Tensor, dtype) -> torch.Tensor:
    """(B, 1, Q, K) additive attention mask from allowed (B, Q, K)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)[:, None]


def _tree_inputs(mask: torch.Tensor, fed: list[tuple[int, ...]],
                 past_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ids, positions and 4D additive mask that append every branch in ``fed`` after each prompt.

    Each branch attends to its row's prompt and to its own earlier tokens, never to another branch,
    and continues the prompt's positions, so one forward pass scores all branches (tree attention).
    With ``past_mask`` (B, P) the rows continue a cached, left-padded prefix: every query sees its non-pad
    tokens, and positions start after them.
    """
    batch, width = mask.shape
    branch_ids = [tok for g in fed for tok in g]
    n = len(branch_ids)
    device = mask.device
    past_len = 0 if past_mask is None else past_mask.sum(-1, keepdim=True)
    positions = past_len + (mask.cumsum(-1) - 1).clamp(min=0)  # true positions despite left padding
    offsets = torch.tensor([i for g in fed for i in range(len(g))], device=device)
    positions = torch.cat([positions, positions[:, -1:] + 1 + offsets], 1)
    owner = torch.tensor([k for k, g in enumerate(fed) for _ in g], device=device)
    keys_ok = mask.bool()[:, None, :]  # (B, 1, T) non-pad prompt keys
    prompt_part = _causal(mask)  # (B, T, T)
    idx = torch.arange(n, device=device)
    branch_part = (owner[:, None] == owner[None, :]) & (idx[None, :] <= idx[:, None])  # (n, n)
    allowed = torch.zeros(batch, width + n, width + n, dtype=torch.bool, device=device)
    allowed[:, :width, :width] = prompt_part
    allowed[:, width:, :width] = keys_ok.expand(batch, n, width)
    allowed[:, width:, width:] = branch_part
    ids = torch.tensor(branch_ids, dtype=torch.long, device=device).expand(batch, n)
    if past_mask is not None:
        allowed = torch.cat([past_mask.bool()[:, None, :].expand(batch, width + n, past_mask.shape[1]), allowed], -1)
    return ids, positions, allowed


def score_batch(model, ids, mask, common: list[int], suffixes: list[list[int]], past=None,
                past_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Total log-prob of `common + suffix` after each row, for every suffix: (B, n_suffixes).

    One forward pass: the distinct inputs the suffixes need after the shared prefix (e.g. "4", "."
    serves both "4.0" and "4.5") are appended to each prompt as branches of a tree that attend to
    the prompt but not to each other (``_tree_inputs``); only the last positions reach the LM head.
    ``past``: a KV cache (batch B) of a prefix that every row continues, ``past_mask`` (B, P) its non-pad
    tokens (``score_prompts``' shared prefixes).
    """
    c, batch = len(common), len(ids)
    groups: dict[tuple, list[int]] = {}  # tokens fed after the prefix -> answers continuing them
    for j, suffix in enumerate(suffixes):
        groups.setdefault(tuple(suffix[:-1]), []).append(j)
    fed = [g for g in groups if g]
    branch_ids, positions, allowed = _tree_inputs(mask, fed, past_mask)
    n = branch_ids.shape[1]
    out = model(input_ids=torch.cat([ids, branch_ids], 1), attention_mask=_additive(allowed, next(model.parameters()).dtype),
                position_ids=positions, past_key_values=past, use_cache=past is not None, logits_to_keep=n + c + 1)
    logp = out.logits.float().log_softmax(-1)  # (B, c + 1 + n, V)
    prompt_logp, branch_logp = logp[:, :c + 1], logp[:, c + 1:]
    base = prompt_logp[:, torch.arange(c), torch.tensor(common, dtype=torch.long)].sum(-1)  # (B,)
    starts = {g: sum(len(h) for h in fed[:k]) for k, g in enumerate(fed)}
    scores = torch.zeros(batch, len(suffixes), device=ids.device)
    for inputs, members in groups.items():
        dist = prompt_logp[:, -1:]  # (B, 1, V) predicts the first suffix token
        if inputs:
            dist = torch.cat([dist, branch_logp[:, starts[inputs]:starts[inputs] + len(inputs)]], 1)
        for j in members:
            scores[:, j] = base + dist[:, torch.arange(dist.shape[1]), torch.tensor(suffixes[j])].sum(-1)
    return scores


def shared_prefixes(ids: list[list[int]], max_group: int, min_shared: int | None) -> tuple[list[tuple[int, list[int]]],
                                                                                          list[int]]:
    """Prompts that begin with the same ``min_shared`` or more tokens, grouped (at most ``max_group`` each).

    Neighbours in token order are grouped while their common prefix stays that long; the prefix stops
    one token short of the shortest member, so every member keeps a token of its own. ``min_shared`` None
    (or 0) groups nothing: every prompt runs whole.

    Returns:
        ([(prefix length, member indices), ...] for groups of two or more, indices of the other prompts).
    """
    if not min_shared:
        return [], list(range(len(ids)))
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    groups, rest, members, shared = [], [], [], 0

    def close():
        if len(members) > 1:
            groups.append((shared, list(members)))
        else:
            rest.extend(members)

    for i in order:
        if members and len(members) < max_group:
            first, seq = ids[members[0]], ids[i]
            n = next((k for k, (a, b) in enumerate(zip(first, seq)) if a != b), min(len(first), len(seq)))
            n = min(n, shared, len(seq) - 1)
            if n >= min_shared:
                members.append(i)
                shared = n
                continue
        close()
        members, shared = [i], len(ids[i]) - 1
    close()
    return groups, sorted(rest)


def score_prompts(model, prompts: list[list[int]], groups: list[tuple[int, list[int]]], rest: list[int],
                  common: list[int], suffixes: list[list[int]], pad_id: int, device) -> torch.Tensor:
    """``score_batch`` of one batch of prompts (token ids without ``common``): (B, n_suffixes), in prompt order.

    ``groups`` and ``rest`` split the prompts as ``shared_prefixes`` does: each group runs its prefix once and
    its members continue the KV cache (every group's prefix in one forward pass, left-padded, then every
    member's rest in another); the ``rest`` run whole, together. Differentiable, so training takes the same path.
    """
    parts, order = [], []
    if groups:
        pids, pmask = left_pad([prompts[idx[0]][:shared] for shared, idx in groups], pad_id, device)
        past = model(input_ids=pids, attention_mask=_additive(_causal(pmask), next(model.parameters()).dtype),
                     position_ids=(pmask.cumsum(-1) - 1).clamp(min=0), use_cache=True, logits_to_keep=1).past_key_values
        rows = torch.tensor([g for g, (_, idx) in enumerate(groups) for _ in idx], device=device)
        past.batch_select_indices(rows)  # each member's row of its group's prefix
        members = [(k, shared) for shared, idx in groups for k in idx]
        ids, mask = left_pad([prompts[k][shared:] + common for k, shared in members], pad_id, device)
        parts.append(score_batch(model, ids, mask, common, suffixes, past, pmask[rows]))
        order += [k for k, _ in members]
    if rest:
        ids, mask = left_pad([prompts[k] + common for k in rest], pad_id, device)
        parts.append(score_batch(model, ids, mask, common, suffixes))
        order += rest
    logp = torch.cat(parts) if len(parts) > 1 else parts[0]
    return logp if order == sorted(order) else logp[torch.argsort(torch.tensor(order, device=logp.device))]
