"""Small modules shared by the tests (importable by worker processes)."""

from torch import nn


class MLP(nn.Module):
    """A one-hidden-layer perceptron sized from the data."""

    def __init__(self, n_features_in, n_classes, hidden=16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(n_features_in, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)
        )

    def forward(self, x):
        return self.net(x)


class FixedMLP(nn.Module):
    """An MLP that does not take its sizes from the data."""

    def __init__(self, n_in=64, n_out=10, hidden=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    """A convolutional network with BatchNorm for (n, 1, 8, 8) digit images."""

    def __init__(self, n_classes, channels=8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(channels * 16, n_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class BatchNormMLP(nn.Module):
    """A one-hidden-layer perceptron with BatchNorm, sized from the data."""

    def __init__(self, n_features_in, n_classes):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features_in, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, n_classes)
        )

    def forward(self, x):
        return self.net(x)
