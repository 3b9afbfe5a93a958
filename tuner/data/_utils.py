"""torchtune's module path ``torchtune.data._utils``; the names live in `tuner.data.utils`."""

from tuner.data.utils import format_content_with_images, load_image, truncate  # noqa: F401
