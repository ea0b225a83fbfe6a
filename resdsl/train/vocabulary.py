"""The recipe's words that the trainer acts on, defined once: the spec resolver validates recipes against these
and the trainer implements them. Imports nothing (compiling a spec never imports torch)."""

IN_MEMORY_DATASETS = ("cifar10", "cifar100", "fashion-mnist", "mnist", "synthetic")
FOLDER_DATASETS = ("imagenet",)  # named in recipes, read from a folder the user gives with --data
RECIPE_DATASETS = IN_MEMORY_DATASETS + FOLDER_DATASETS
