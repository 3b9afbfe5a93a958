"""torchtune's module path ``torchtune.data._messages``; the names live in `tuner.data.messages`."""

from tuner.data.messages import (  # noqa: F401
    AlpacaToMessages,
    ChosenRejectedToMessages,
    InputOutputToMessages,
    Message,
    OpenAIToMessages,
    Role,
    ShareGPTToMessages,
    validate_messages,
)
from tuner.data.utils import format_content_with_images, load_image  # noqa: F401
