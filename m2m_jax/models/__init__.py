"""Flax linen modules, one file per family. No module reads a config; configs build modules.

``get(name)`` returns the module class registered under ``name`` (``'mlp'``, ``'cnn'``,
``'simple_cnn'``, ``'linear'``, ``'resnet'``, ``'resnet18'``, ``'resnet20'``, ``'resnet34'``,
``'resnet50'``, ``'unet'``, ``'colorization_net'``, ``'denoising_ae'``, ``'vae'``, ``'ddpm_unet'``,
``'dcgan'``, ``'latent_ode'``, ``'vit'``, ``'swin'``, ``'clip'``,
``'faster_rcnn'``).
"""

from m2m_jax.errors import choose
from m2m_jax.models import (autoencoder, clip, cnn, ddpm_unet, faster_rcnn, gan, latent_ode,
                            mlp, resnet, swin, unet, vae, vit)

MODELS = {
    "mlp": mlp.MLP,
    "linear": mlp.Linear,
    "cnn": cnn.CNN,
    "simple_cnn": cnn.SimpleCNN,
    "resnet": resnet.ResNet,
    "resnet18": resnet.ResNet18,
    "resnet20": resnet.ResNet20,
    "resnet34": resnet.ResNet34,
    "resnet50": resnet.ResNet50,
    "unet": unet.UNet,
    "colorization_net": autoencoder.ColorizationNet,
    "denoising_ae": autoencoder.DenoisingAE,
    "latent_ode": latent_ode.LatentODE,
    "vae": vae.VAE,
    "ddpm_unet": ddpm_unet.DDPMUNet,
    "dcgan": gan.DCGAN,
    "vit": vit.ViT,
    "swin": swin.SwinTransformer,
    "clip": clip.CLIP,
    "faster_rcnn": faster_rcnn.FasterRCNN,
}


def get(name: str):
  """The module class registered as ``name``; a clear error lists the choices."""
  choose("model", name, MODELS)
  return MODELS[name]
