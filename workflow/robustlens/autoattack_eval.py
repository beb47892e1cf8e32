"""Robust accuracy under AutoAttack (Croce & Hein 2020), the RobustBench standard: an optional
column of the models table next to the PGD evaluation.

Uses the AutoAttack code robustbench depends on (PyPI ``pyautoattack``, module ``pyautoattack``;
or the original ``autoattack`` module when that is installed), imported only when called.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import torch


def import_autoattack():
    """The ``AutoAttack`` class from ``autoattack`` or, failing that, ``pyautoattack``."""
    for name in ("autoattack", "pyautoattack"):
        try:
            return importlib.import_module(name).AutoAttack
        except ModuleNotFoundError:
            continue
    raise ImportError("AutoAttack is not installed: `pip install pyautoattack`")


def make_autoattack(model: torch.nn.Module, settings: dict, norm: str, eps: float, device: torch.device, seed: int = 0):
    """AutoAttack of ``settings["version"]`` at ``eps`` (either package's API). ``settings``
    may set ``iterations``: the iterations of each APGD and FAB run and the queries of Square
    (AutoAttack's own: 100 and 5000); fewer only to rehearse, since the result is then not the
    RobustBench standard evaluation."""
    AutoAttack = import_autoattack()
    norm_name = {"l2": "L2", "linf": "Linf"}[settings.get("norm", norm)]
    options = dict(norm=norm_name, eps=eps, version=settings["version"], device=str(device), seed=seed)
    if "verbose" in inspect.signature(AutoAttack.__init__).parameters:  # the original autoattack API
        options["verbose"] = False
    attack = AutoAttack(model, **options)
    if settings.get("iterations"):
        for name in ("apgd", "apgd_targeted", "fab"):
            getattr(attack, name).n_iter = int(settings["iterations"])
        attack.square.n_queries = int(settings["iterations"])
    return attack


def autoattack_accuracy(model: torch.nn.Module, x_test: np.ndarray, y_test: np.ndarray, settings: dict, norm: str, device: torch.device, seed: int = 0) -> dict:
    """Robust accuracy under AutoAttack at every eps of ``settings`` on the first
    ``settings["n_samples"]`` test images: ``{str(eps): accuracy}``."""
    n = settings["n_samples"]
    x = torch.as_tensor(x_test[:n]).to(device)
    y = torch.as_tensor(y_test[:n]).to(device)
    model = model.to(device).eval()
    out = {}
    for eps in settings["eps"]:
        batch = settings.get("batch_size", 256)
        attack = make_autoattack(model, settings, norm, eps, device, seed)
        if "verbose" in inspect.signature(type(attack).__init__).parameters:  # the original autoattack API
            x_adv = attack.run_standard_evaluation(x, y, bs=batch)
        else:  # pyautoattack 0.2: keyword-only options, batch_size
            x_adv, _ = attack.run_standard_evaluation(x, y, batch_size=batch)  # returns (x_adv, y_adv)
        with torch.no_grad():
            correct = torch.cat([model(x_adv[i : i + 256]).argmax(1) == y[i : i + 256] for i in range(0, len(y), 256)])
        out[str(eps)] = correct.double().mean().item()
    return out
