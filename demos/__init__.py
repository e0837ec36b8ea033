"""Gradio demos over mmrwkv: streaming multimodal chat (`chat`) and caption/VQA side by side (`caption_vqa`)."""
