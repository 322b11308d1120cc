"""BurnUNet, the architecture of the shipped model, for the torch backend (and for training).

It lives in engines/ because the torch backend must rebuild the network to load the state dict
(`burn_unet_v2.pt`), and engines/ sits below app/: app/training/train.py should import `build_model` from
here rather than define its own copy. PyTorch is imported inside `build_model`, so this module
imports without it.

Shapes: (N, 3, H, W) float32 normalised RGB -> (N, num_classes, H, W) logits; H and W multiples
of 16 (four 2x poolings). State-dict keys: enc1..enc4, bottleneck, up4..up1, dec4..dec1,
classifier (each block a Sequential of Conv2d(bias=False), BatchNorm2d, ReLU per conv).
"""
from __future__ import annotations

NUM_CLASSES = 6
WIDTHS = (16, 32, 64, 128)


def build_model(num_classes: int = NUM_CLASSES, widths=WIDTHS):
    """A fresh BurnUNet (see the module docstring); encoder levels at 1, 1/2, 1/4, 1/8 resolution
    with `widths` channels, a one-conv bottleneck at 1/16, a decoder of 2x2 transposed convolutions
    with skip connections, and a 1x1 classifier."""
    import torch
    from torch import nn

    def conv_block(cin: int, cout: int, convs: int = 2) -> nn.Sequential:
        layers = []
        for i in range(convs):
            layers.append(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False))
            layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
        return nn.Sequential(*layers)

    class BurnUNet(nn.Module):
        def __init__(self):
            super().__init__()
            w1, w2, w3, w4 = widths
            self.enc1 = conv_block(3, w1)
            self.enc2 = conv_block(w1, w2)
            self.enc3 = conv_block(w2, w3)
            self.enc4 = conv_block(w3, w4)
            self.pool = nn.MaxPool2d(2)
            self.bottleneck = conv_block(w4, w4, convs=1)
            self.up4 = nn.ConvTranspose2d(w4, w3, 2, stride=2)
            self.dec4 = conv_block(w3 + w4, w3)
            self.up3 = nn.ConvTranspose2d(w3, w2, 2, stride=2)
            self.dec3 = conv_block(w2 + w3, w2)
            self.up2 = nn.ConvTranspose2d(w2, w1, 2, stride=2)
            self.dec2 = conv_block(w1 + w2, w1)
            self.up1 = nn.ConvTranspose2d(w1, w1, 2, stride=2)
            self.dec1 = conv_block(w1 + w1, w1)
            self.classifier = nn.Conv2d(w1, num_classes, 1)

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(self.pool(e1))
            e3 = self.enc3(self.pool(e2))
            e4 = self.enc4(self.pool(e3))
            b = self.bottleneck(self.pool(e4))
            d4 = self.dec4(torch.cat([self.up4(b), e4], 1))
            d3 = self.dec3(torch.cat([self.up3(d4), e3], 1))
            d2 = self.dec2(torch.cat([self.up2(d3), e2], 1))
            d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
            return self.classifier(d1)

    return BurnUNet()


def fold_batch_norm(model):
    """Every Conv2d followed by a BatchNorm2d in a Sequential becomes one Conv2d with a bias (the
    normalisation's eval-mode affine map folded into its weights), the BatchNorm an Identity: the
    same function with one kernel fewer per convolution. For inference only (eval mode); in place,
    returns the model."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for block in model.modules():
        if isinstance(block, nn.Sequential):
            for i in range(len(block) - 1):
                if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                    block[i] = fuse_conv_bn_eval(block[i], block[i + 1])
                    block[i + 1] = nn.Identity()
    return model
