"""Messages in the words of the interface the user used.

The core writes its one-sentence errors and warnings with the CLI's flags ("lower --learning-rate",
"pass --skip-bad-images"), the words of the command line it shares with the app. Shown in the
app, those flags would name options the form does not have: :func:`for_form` puts the Run page's
field names in their place. One table, so a new form field is one line here.
"""

from __future__ import annotations

import re

#: CLI flag -> the Run page's field, as people read it (section in parentheses when folded away).
FORM_FIELDS: dict[str, str] = {
    "--batch-size": "'Batch size' (Data and run options)",
    "--skip-bad-images": "'Skip unreadable images' (Data and run options)",
    "--learning-rate": "'Learning rate'",
    "--quanta-lr": "'QUANTA weights' learning rate' (Advanced parameters)",
    "--resolution": "'Input size (px)'",
    "--split-path": "'Split CSV folder' (Data and run options)",
    "--splits": "'Draws per value'",
    "--samples-per-class": "'Samples per class'",
    "--nb_of_target_samples": "'Training samples per class'",
    "--nb_of_samples": "'Training samples per class'",
    "--nb_of_target_epochs": "'Target epochs'",
    "--epochs": "'Epochs (at most)'",
    "--layer_to_transfer": "'Layer to transfer'",
    "-l": "'Layer to transfer'",
    "-sw": "'Source weights'",
    "--source_weights": "'Source weights'",
    "-s": "'Source task' (Advanced parameters)",
    "--source_task": "'Source task' (Advanced parameters)",
    "--weights": "'Weights'",
    "--download-weights": "'Download the weights when the run starts'",
    "--download": "the dataset's download option",
    "--data-dir": "'Torchvision data folder' (Data and run options)",
    "--use-crops": "'10 crops per image' (Data and run options)",
    "--precomputed-crops": "'10 crops per image' (Data and run options)",
    "--model-selection": "'Mode'",
    "--model-description": "'Layers (model description)'",
    "--taps": "'Layers (model description)'",
    "--classifier": "'Classifier'",
    "--optimizer": "'Optimizer'",
    "--weight-decay": "'Weight decay' (Advanced parameters)",
    "--bn-trainable": "'BatchNorm trainable in frozen layers' (Advanced parameters)",
    "--bn-statistics": "'BatchNorm trainable in frozen layers' (Advanced parameters)",
    "--resume": "'Resume run id' (Advanced parameters)",
    "--device": "'Device' (Data and run options)",
    "--seed": "'Seed' (Data and run options)",
    "--architecture": "'Backbone'",
    "--backbone": "'Backbone'",
    "--dataset": "'Dataset'",
    "--train_from_previous_training": "'Resume from a checkpoint file' (Advanced parameters)",
    "-o": "'Export folder for the seed's files' (Advanced parameters)",
    "--outdir": "'Export folder for the seed's files' (Advanced parameters)",
    "--keep-weights": "'Keep the target checkpoint in the run' (Advanced parameters)",
    "--mlflow-path": "TLCORE_MLFLOW_PATH (the results folder the app is started with)",
}

# a flag as a word of its own: "--batch-size", "pass -sw", "(--skip-bad-images)"; not inside "x--y" or paths
_FLAG = re.compile(r"(?<![\w/.-])(--?[a-z][a-z_-]*)(?![\w-])")


def for_form(message: str) -> str:
    """``message`` with every CLI flag the Run page has a field for replaced by that field's name."""
    if not message:
        return message
    # "pass --flag" is how a command line is changed; a form field is set
    message = re.sub(r"\bpass (?=(--?[a-z][a-z_-]*))", lambda m: "set " if m.group(1) in FORM_FIELDS else m.group(0),
                     message)
    return _FLAG.sub(lambda m: FORM_FIELDS.get(m.group(1), m.group(1)), message)
