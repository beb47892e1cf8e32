"""torch.optim.SGD's update, reproduced without importing torch's compiler.

In torch 2.14 the methods of :class:`torch.optim.Optimizer` that a fit calls (``__init__`` through
``add_param_group``, ``zero_grad``, ``step``, ``state_dict``, ``load_state_dict``) are wrapped in
``torch._disable_dynamo`` or ``_use_grad_for_differentiable``, which import ``torch._dynamo`` on
their first call. Building the optimiser and fitting's OneCycleLR and taking one step took 1.06 s
in a fresh process with ``torch.optim.SGD`` and 0.7 ms with :class:`MomentumSGD` (medians of 5, on
a 2-core CPU machine; the whole process 1.5 s shorter), a second paid by every job that fits a
model (35 jobs of the default study). MomentumSGD is an Optimizer (the schedulers of
``torch.optim.lr_scheduler`` accept it) that calls none of those methods.

The update is torch's SGD exactly: Sutskever-style momentum in PyTorch's formulation (the buffer
starts as the first gradient, then ``b <- momentum * b + (1 - dampening) * g``; the step is
``-lr * b``, or ``-lr * (g + momentum * b)`` with Nesterov) and coupled L2 weight decay
(``g <- g + weight_decay * p`` before the momentum), computed with the same tensor operations in
the same order as torch's single-tensor loop (``_single_tensor_sgd``) or its multi-tensor
``torch._foreach_*`` path (``_multi_tensor_sgd``), chosen as torch chooses by default (its
``_default_to_fused_or_foreach``, fused off: foreach when every parameter stepped is on CUDA). Parameters and momentum buffers are therefore
bit-identical to ``torch.optim.SGD``'s with the same ``foreach``, and :meth:`MomentumSGD.state_dict`
has torch's SGD format, so the states of either load into the other. Not reproduced: ``maximize``,
``fused``, ``differentiable``, tensor learning rates, sparse gradients, closures and step hooks.
"""

from __future__ import annotations

from collections import defaultdict
from copy import deepcopy

import torch
from torch.optim.optimizer import _default_to_fused_or_foreach


class MomentumSGD(torch.optim.Optimizer):
    """``torch.optim.SGD(params, lr, momentum, weight_decay=..., nesterov=..., foreach=...)`` (one
    parameter group, dampening 0), without torch._dynamo. ``foreach``: None (torch's default:
    the ``torch._foreach_*`` path when every parameter stepped is on CUDA), True or False."""

    def __init__(self, params, *, lr: float, momentum: float, weight_decay: float, nesterov: bool,
                 foreach: bool | None = None):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires a momentum")
        params = list(params)
        if not params or not all(isinstance(p, torch.Tensor) for p in params):
            raise TypeError("MomentumSGD optimises a non-empty iterable of tensors (one parameter group)")
        self.defaults = {"lr": lr, "momentum": momentum, "dampening": 0, "weight_decay": weight_decay,
                         "nesterov": nesterov, "foreach": foreach}
        self.param_groups = [{"params": params, **self.defaults}]
        self.state = defaultdict(dict)

    def __setstate__(self, state: dict) -> None:  # the base one patches step with hooks this class lacks
        self.__dict__.update(state)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's Optimizer.zero_grad: gradients set to None, or detached and zeroed."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if p.grad.grad_fn is not None:
                        p.grad.detach_()
                    else:
                        p.grad.requires_grad_(False)
                    p.grad.zero_()

    def step(self) -> None:
        """One SGD step of every parameter with a gradient (torch's SGD.step)."""
        with torch.no_grad():
            for group in self.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                grads = [p.grad for p in params]
                bufs = [self.state[p].get("momentum_buffer") if group["momentum"] != 0 else None for p in params]
                foreach = group.get("foreach")
                if foreach is None:
                    foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)[1]
                update = _multi_tensor_sgd if foreach else _single_tensor_sgd
                update(params, grads, bufs, lr=group["lr"], momentum=group["momentum"], dampening=group["dampening"],
                       weight_decay=group["weight_decay"], nesterov=group["nesterov"])
                if group["momentum"] != 0:
                    for p, buf in zip(params, bufs):
                        self.state[p]["momentum_buffer"] = buf

    def state_dict(self) -> dict:
        """torch's format: ``{"state": {index: {"momentum_buffer": tensor}}, "param_groups":
        [{hyperparameters..., "params": [indices]}]}``, indices numbering the parameters in order;
        the buffers are the optimiser's own tensors (torch.save them, or copy)."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        return {"state": {index[id(p)]: s for p, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a :meth:`state_dict` of this class or of ``torch.optim.SGD`` (same format): the
        hyperparameters of the saved groups (with the schedulers' entries) replace the current
        ones, and the buffers are moved to their parameter's device and dtype."""
        saved = deepcopy(state_dict["param_groups"])
        if [len(g["params"]) for g in saved] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(f"optimiser state of {[len(g['params']) for g in saved]} parameters (per group), "
                             f"loaded into one of {[len(g['params']) for g in self.param_groups]}")
        unsupported = sorted({k for g in saved for k in ("maximize", "fused", "differentiable") if g.get(k)})
        if unsupported:
            raise ValueError(f"optimiser state with {unsupported} set: MomentumSGD does not reproduce them")
        params = {i: p for s, g in zip(saved, self.param_groups) for i, p in zip(s["params"], g["params"])}
        state = defaultdict(dict)
        for i, values in state_dict["state"].items():
            p = params[i]
            state[p] = {k: v.to(dtype=p.dtype, device=p.device) if isinstance(v, torch.Tensor) else v
                        for k, v in values.items()}
        self.param_groups = [{**g, **s, "params": g["params"]} for s, g in zip(saved, self.param_groups)]
        self.state = state


def _single_tensor_sgd(params, grads, bufs, *, lr, momentum, dampening, weight_decay, nesterov) -> None:
    """torch.optim.sgd._single_tensor_sgd (fills ``bufs``' None entries with new buffers)."""
    for i, (param, grad) in enumerate(zip(params, grads)):
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if momentum != 0:
            buf = bufs[i]
            if buf is None:
                buf = bufs[i] = grad.detach().clone()
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - dampening)
            grad = grad.add(buf, alpha=momentum) if nesterov else buf
        param.add_(grad, alpha=-lr)


def _multi_tensor_sgd(params, grads, bufs, *, lr, momentum, dampening, weight_decay, nesterov) -> None:
    """torch.optim.sgd._multi_tensor_sgd: the same update with ``torch._foreach_*`` operations on
    the parameters of each device and dtype (fills ``bufs``' None entries with new buffers)."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        groups[p.device, p.dtype].append(i)
    for indices in groups.values():
        device_params = [params[i] for i in indices]
        device_grads = [grads[i] for i in indices]
        if weight_decay != 0:
            device_grads = torch._foreach_add(device_grads, device_params, alpha=weight_decay)
        if momentum != 0:
            if all(bufs[i] is not None for i in indices):
                device_bufs = [bufs[i] for i in indices]
                torch._foreach_mul_(device_bufs, momentum)
                torch._foreach_add_(device_bufs, device_grads, alpha=1 - dampening)
            else:
                for i, grad in zip(indices, device_grads):
                    if bufs[i] is None:
                        bufs[i] = grad.detach().clone()
                    else:
                        bufs[i].mul_(momentum).add_(grad, alpha=1 - dampening)
                device_bufs = [bufs[i] for i in indices]
            if nesterov:
                torch._foreach_add_(device_grads, device_bufs, alpha=momentum)  # in place, as torch (p.grad too)
            else:
                device_grads = device_bufs
        torch._foreach_add_(device_params, device_grads, alpha=-lr)
