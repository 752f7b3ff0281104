"""The names of the ten classes of each data set, for people reading plots and predictions."""

CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    # Fashion-MNIST's labels, in label order (zalandoresearch/fashion-mnist, README).
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


def class_names(dataset, classes=10):
    """The names of `dataset`'s classes; label numbers for an unknown data set or size."""
    names = CLASS_NAMES.get(dataset)
    if names is None or len(names) != classes:
        return [str(k) for k in range(classes)]
    return list(names)
