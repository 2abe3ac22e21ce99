"""Faster R-CNN (models/faster_rcnn.py, algorithms/faster_rcnn.py): a ResNet + FPN backbone,
a region proposal network and a box head, trained end to end; COCO's mAP and VOC's AP on the
test split.

Presets (test split; measured on 2 CPU cores, jax 0.10.2):
  default   detection_shapes 64x64 (2,000 / 500 scenes of up to 6 ellipses, rectangles and
            triangles, some empty, with clutter) read at 128x128: a ResNet of one basic block
            a stage, widths 16-128, FPN 32 channels, box head 128; anchors 16..256 (one size
            a level x 3 ratios), 200 proposals an image in training, 64 RoIs sampled and
            pooled with one RoIAlign sample a bin (torchvision's 2 x 2 made a step 2.5 times
            slower); random flips; AdamW 2e-3 with warmup and cosine decay, batch 16, 14 epochs
            (1,750 steps): mAP@50 0.933, mAP 0.713, mAP@75 0.847, mAR@100 0.772, VOC AP@50
            0.939 (11-point 0.890) on the 500 test scenes, in 264 s (offline; 584k
            parameters). With 2 x 2 samples and 9 epochs: mAP@50 0.905 in 436 s; 1 sample and
            9 epochs: 0.885 in 178 s. At 64x64 with anchors 8..128 the same network reached
            mAP@50 0.851 in 12 epochs.
  seed      the original notebook's experiment: tfds voc/2012's train split cut 60 / 20 / 20
            (train[:60%] for training, train[80%:] as the test, 1,144 images; the original cut
            at random, seed 42), images resized to 256x256 and then, as torchvision's transform
            did inside the original's model, to 800x800; fasterrcnn_resnet50_fpn with
            torchvision's defaults, from COCO-pretrained weights given as a file
            (--config.pretrained=PATH, see below; without it, from scratch); SGD momentum 0.9,
            weight decay 5e-4, batch 4, 10 epochs, the rate times 0.1 every 3 epochs, as the
            original, but at 5e-3 (torchvision's 0.02 for batch 16, scaled to 4) instead of its
            1e-4. The original: mAP 0.2767, mAP@50 0.5606, mAP@75 0.2236, mAR@100 0.4781 (COCO's
            101-point AP). Needs internet the first time; not run here (no accelerator).
  voc2007   the literature's benchmark: tfds voc/2007 trainval -> test (4,952 images), the
            same model and weights, images at 512x512, horizontal flips, 12 epochs; reports VOC07
            AP@50 (11-point, voc07_ap50) beside the others. Not run here.

COCO-pretrained weights for the seed and voc2007 presets, saved once on a machine with internet:

  python -c "import torch, torchvision; torch.save(torchvision.models.detection.\\
fasterrcnn_resnet50_fpn(weights='DEFAULT').state_dict(), 'frcnn_coco.pt')"

  python -m m2m_jax.main --config=faster_rcnn --workdir=runs/faster_rcnn
  python -m m2m_jax.main --config=faster_rcnn:seed --workdir=runs/frcnn_voc \\
      --config.pretrained=frcnn_coco.pt --config.data.download=True
"""

from m2m_jax import configlib
from m2m_jax.algorithms.faster_rcnn import detector_config

VOC_KEYS = {"x": "image", "boxes": "objects/bbox", "labels": "objects/label"}
VOC_MAX_BOXES = 64  # each image's objects padded (or cut) to this many


def default():
  c = configlib.base()
  c.algorithm = "faster_rcnn"
  c.dataset = "detection_shapes"
  c.data.size = 64
  c.model_name = "faster_rcnn"
  c.model.conv_impl = "auto"  # "cpu" (m2m_jax.ops.conv), "xla" or "auto" (cpu on a CPU)
  c.model.stage_sizes = (1, 1, 1, 1)
  c.model.block = "basic"
  c.model.width = 16
  c.model.fpn_width = 32
  c.model.representation = 128
  c.model.sampling_ratio = 1  # RoIAlign's samples a bin and axis (torchvision's 2)
  c.detector = detector_config(
      anchor_sizes=(16, 32, 64, 128, 256),
      rpn_pre_nms_top_n_train=400, rpn_post_nms_top_n_train=200,
      rpn_pre_nms_top_n_test=400, rpn_post_nms_top_n_test=100,
      box_batch_size_per_image=64)
  c.pretrained = ""          # a torchvision fasterrcnn_resnet50_fpn state_dict (torch.save)
  # The 64x64 scenes read at 128x128, as torchvision's transform enlarges small images: an
  # object of 8 pixels then spans 4 of P2's cells instead of 2.
  c.transforms = "resize(128)|flip_lr"
  c.eval_transforms = "resize(128)"
  c.optimizer = "adamw"
  c.learning_rate = 2e-3
  c.weight_decay = 1e-4
  c.schedule = "cosine"
  c.warmup_steps = 100
  c.grad_clip_norm = 10.0
  c.batch_size = 16
  c.eval_batch_size = 100
  c.num_epochs = 14.0
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  return c


def _resnet50_fpn(c):
  c.model.stage_sizes = (3, 4, 6, 3)
  c.model.block = "bottleneck"
  c.model.width = 64
  c.model.fpn_width = 256
  c.model.representation = 1024
  c.model.sampling_ratio = 2
  c.detector = detector_config()
  return c


def _voc(c, name: str, train_split: str, test_split: str, image_size: int):
  """tfds' VOC: images, boxes and labels, each image's objects padded to VOC_MAX_BOXES."""
  return configlib.use_tfds(c, name, train_split=train_split, test_split=test_split,
                            keys=VOC_KEYS, max_lengths={"boxes": VOC_MAX_BOXES,
                                                        "labels": VOC_MAX_BOXES},
                            image_size=image_size)


def seed():
  c = _voc(_resnet50_fpn(default()), "voc/2012", "train[:60%]", "train[80%:]", 256)
  c.eval_transforms = c.transforms = "resize(800)"
  c.optimizer = "momentum"  # SGD with momentum 0.9
  c.learning_rate = 5e-3
  c.weight_decay = 5e-4
  c.schedule = "step"
  c.warmup_steps = 0
  c.grad_clip_norm = 0.0
  c.batch_size = 4
  c.eval_batch_size = 8
  c.num_epochs = 10.0
  c.decay_every = 3 * 857    # StepLR(step_size=3 epochs, gamma=0.1); 857 steps an epoch
  c.decay_factor = 0.1
  c.eval_every = 2000
  c.checkpoint_every = 1000
  return c


def voc2007():
  c = _voc(seed(), "voc/2007", "train+validation", "test", 512)
  c.transforms = "flip_lr"
  c.eval_transforms = ""
  c.batch_size = 8
  c.learning_rate = 1e-2
  c.num_epochs = 12.0
  c.decay_every = 8 * 626    # 5,011 images: 626 steps an epoch; decay after epoch 8
  return c


PRESETS = {"default": default, "seed": seed, "voc2007": voc2007}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
