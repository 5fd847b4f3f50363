"""An utterance's audio feature and its logits do not depend on the other utterances of its batch."""

import numpy as np
import torch
from tiny_magtkd import tiny_audio_config, tiny_config, tiny_processor, write_conversation_rows

from magtkd_hf import MagtkdAudioConfig, MagtkdAudioModel, MagtkdForEmotionRecognition


def test_audio_features_at_the_real_positional_convolution_settings_ignore_padding(one_torch_thread):
    torch.manual_seed(0)
    # data2vec-audio-base's positional convolution: 5 layers, kernel 19, 16 groups (random weights).
    config = MagtkdAudioConfig(encoder_config=tiny_audio_config(
        num_conv_pos_embeddings=5, conv_pos_kernel_size=19, num_conv_pos_embedding_groups=16, hidden_size=64,
        num_attention_heads=4, conv_dim=(64, 64, 64),
    ))
    model = MagtkdAudioModel(config).eval()
    rng = np.random.default_rng(0)
    waves = [torch.tensor(rng.standard_normal(n), dtype=torch.float32) for n in (16000, 96000, 40000, 16000)]
    longest = max(len(w) for w in waves)
    values = torch.zeros(len(waves), longest)
    mask = torch.zeros(len(waves), longest, dtype=torch.long)
    for row, wave in enumerate(waves):
        values[row, : len(wave)], mask[row, : len(wave)] = wave, 1
    with torch.no_grad():
        batched = model(values, mask).features
        alone = torch.cat([model(wave[None]).features for wave in waves])
        # What the leak looks like without the per-length grouping: the masked, padded encoder call.
        leaky = model.audio_encoder.encoder(values, attention_mask=mask).last_hidden_state[:, 0]
    assert (batched - alone).abs().max().item() <= 1e-5
    assert (leaky[0] - alone[0]).abs().max().item() > 1e-3  # the leak this guards against is real


def test_end_to_end_logits_alone_equal_batched_beside_longer_and_shorter(tmp_path, one_torch_thread):
    processor = tiny_processor()
    torch.manual_seed(0)
    model = MagtkdForEmotionRecognition(tiny_config(processor)).eval()
    rows = write_conversation_rows(tmp_path, lengths=(3, 1, 2))
    rows[1]["video_paths"] = [str(p) for p in rows[1]["video_paths"]]
    with torch.no_grad():
        batched = model(**processor(rows)).logits
        for index, row in enumerate(rows):
            alone = model(**processor([row])).logits[0]
            count = len(row["texts"])
            assert (batched[index, :count] - alone[:count]).abs().max().item() <= 1e-5
