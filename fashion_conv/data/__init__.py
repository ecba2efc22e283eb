"""The data: ``FashionMNISTDataModule`` (``datamodule``), the official IDX files checked and converted (``idx``,
``files``), the CSV reader with its cache (``csvio``), training augmentation (``augment``) and the class names."""
