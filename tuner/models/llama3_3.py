"""Llama 3.3 (70B): the Llama 3.1 70B architecture with new weights, under torchtune's names."""
from __future__ import annotations

from tuner.models.llama3_1 import llama3_1, llama3_1_70b, lora_llama3_1, lora_llama3_1_70b, qlora_llama3_1, qlora_llama3_1_70b

llama3_3 = llama3_1
lora_llama3_3 = lora_llama3_1
qlora_llama3_3 = qlora_llama3_1
llama3_3_70b = llama3_1_70b
lora_llama3_3_70b = lora_llama3_1_70b
qlora_llama3_3_70b = qlora_llama3_1_70b

__all__ = ["llama3_3", "llama3_3_70b", "lora_llama3_3", "lora_llama3_3_70b", "qlora_llama3_3", "qlora_llama3_3_70b"]
