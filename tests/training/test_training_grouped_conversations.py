"""data.group_by_media: all questions about one image train as one multi-turn conversation."""

from mmrwkv.config import load_config
from mmrwkv.training.build import build_datasets, build_model


def test_grouped_dataset_holds_every_question_of_an_image_once_with_its_image(tmp_path, tiny):
    cfg = load_config("recipes/easy_vqa.yaml", tiny(tmp_path, **{"data.group_by_media": "true",
                                                               "data.max_text_tokens": 4096}))
    model = build_model(cfg)
    grouped, _, collate = build_datasets(cfg, model)
    single = build_datasets(load_config("recipes/easy_vqa.yaml", tiny(tmp_path)), model)[0]
    images = {s.images[0] for s in single.samples}
    assert len(grouped) == len(images)
    total_turns = 0
    for i in range(len(grouped)):
        encoded, meta = grouped[i]
        assert len(encoded.media.get("image")) == 1
        assert str(encoded.media.get("image")[0].shape) and meta["images"][0] in {str(p) for p in images}
        total_turns += model.tokenizer.decode(encoded.ids).count("Assistant:")
    assert total_turns == len(single)
    batch = collate([grouped[0], grouped[1]])
    assert batch["input_ids"].shape[0] == 2 and (batch["labels"] != -100).any(dim=1).all()
