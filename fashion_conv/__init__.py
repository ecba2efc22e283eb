"""fashion_conv: what convolutional layers do, on Fashion-MNIST, with PyTorch Lightning."""
