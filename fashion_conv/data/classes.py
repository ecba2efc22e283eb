"""The ten Fashion-MNIST class names, by label: the data's meaning, apart from how a file stores it (no torch)."""

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
