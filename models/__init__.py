"""Model zoo: one registry (``create_model``, ``list_models``) over Slim-Net and the baselines."""
from models._checkpoint import extract_state_dict, load_checkpoint_into, read_checkpoint
from models._registry import PretrainedWeightsError, classifier_of, create_model, is_model, list_models, register_model
from models import slimnet as _slimnet  # noqa: F401  (registers entries)
from models import baselines as _baselines  # noqa: F401
from models import course as _course  # noqa: F401
from models import pse as _pse  # noqa: F401
from models.attributes import ATTRIBUTE_GROUPS, CELEBA_ATTRIBUTES
from models.pse import PSE, pse_masks
from models.slimnet import SlimNet, slimnet_kwargs_from_reference


def load_model(path):
    """Rebuild a model from a checkpoint file alone and load its weights.

    Understands checkpoints written by ``bench.train`` (key ``arch``) and by the Slim-CNN
    reference implementation (keys ``hyper_params`` and ``model_state_dict``).

    Returns:
        The model, in eval mode.
    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file has neither ``arch`` nor ``hyper_params``, or its weights do not fit.
    """
    checkpoint = read_checkpoint(path)
    state = extract_state_dict(checkpoint, str(path))
    if "arch" in checkpoint:
        arch = dict(checkpoint["arch"])
        model = create_model(arch.pop("name"), **arch)
    elif "hyper_params" in checkpoint:
        model = create_model("slimnet", **slimnet_kwargs_from_reference(checkpoint["hyper_params"], state))
    else:
        raise ValueError(
            f"checkpoint {str(path)!r} does not say which architecture it holds: expected a key "
            f"'arch' (run_bench.py) or 'hyper_params' (Slim-CNN reference); found {sorted(checkpoint)[:8]}"
        )
    model.load_state_dict(state)
    return model.eval()


__all__ = [
    "ATTRIBUTE_GROUPS",
    "CELEBA_ATTRIBUTES",
    "PSE",
    "PretrainedWeightsError",
    "SlimNet",
    "classifier_of",
    "create_model",
    "extract_state_dict",
    "is_model",
    "list_models",
    "load_checkpoint_into",
    "load_model",
    "pse_masks",
    "read_checkpoint",
    "register_model",
    "slimnet_kwargs_from_reference",
]
