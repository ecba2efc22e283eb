"""The networks: plain ``nn.Module`` backbones (``backbones``), the ``FashionClassifier`` LightningModule that trains
any of them (``classifier``), and safe loading of ``model.pth`` files and checkpoints (``weights``)."""
