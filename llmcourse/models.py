"""Models assembled from blocks: the decoder (causal or prefix) and the encoder-decoder.

Shape legend: ``B`` batch, ``T`` target/decoder length, ``S`` source/encoder
length, ``D`` d_model, ``V`` vocab.

Both models return logits ``(B, T, V)``; a loss is the objective's business
(:mod:`llmcourse.objectives`). The three architectures of the survey differ only
in who may attend to whom: the causal decoder uses a causal mask, the prefix
decoder a prefix mask over the *same* weights (:func:`to_prefix_decoder`), and the
encoder-decoder a bidirectional encoder plus a causal decoder with cross-attention.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Block, LayerCache, build_norm, init_weights
from .checkpoint import load_checkpoint, load_weights
from .config import ModelConfig
from .masks import Pattern, check_attention_mask, combine, padding_bias, prefix_bias
from .positions import build_positions


class Stack(nn.Module):
    """Positions, optional embedding norm, ``n_layers`` blocks and an optional final norm.

    Shapes: ``h (B, T, D)`` token embeddings -> ``(B, T, D)`` hidden states.
    """

    def __init__(self, config: ModelConfig, n_layers: int, *, bidirectional: bool, cross_attention: bool, stack: str) -> None:
        super().__init__()
        alpha, beta = config.deepnorm_constants(stack) if config.placement.deepnorm else (1.0, None)
        self.positions = build_positions(config, bidirectional=bidirectional or config.mask == "prefix")
        self.embed_norm = build_norm(config) if config.embed_norm else None
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, cross_attention, alpha, layer=i) for i in range(n_layers))
        self.final_norm = build_norm(config) if config.resolved_final_norm else None
        self.config = config  # read for the sparse attention pattern (chapter 05)
        self.bidirectional = bidirectional
        init_weights(self, config, n_layers, beta)

    def _pattern(self, q_index: torch.Tensor, k_index: torch.Tensor, causal: bool) -> Pattern | None:
        cfg = self.config
        if cfg.sliding_window is not None and not self.bidirectional:
            return Pattern("window", q_index, k_index, {"block": cfg.sliding_window, "causal": True})
        if cfg.attn_pattern == "full":
            return None
        options = dict(block=cfg.attn_block, causal=causal)
        if cfg.attn_pattern == "bigbird":
            options.update(global_blocks=cfg.attn_global_blocks, random_blocks=cfg.attn_random_blocks)
        return Pattern(cfg.attn_pattern, q_index, k_index, options)

    def forward(
        self,
        h: torch.Tensor,
        *,
        offset: int = 0,
        position_ids: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        causal: bool = False,
        context: torch.Tensor | None = None,
        context_bias: torch.Tensor | None = None,
        caches: list[LayerCache] | None = None,
    ) -> torch.Tensor:
        """``position_ids``: ``(B|1, T)`` (or ``(B|1, T, 2)``), default ``offset + arange(T)``.

        ``key_mask`` ``(B, S_total)``: 1 for real tokens over every position so
        far (cached ones included); the stack keeps the columns of the keys the
        cache still holds. ``bias`` must already cover this call's ``(T, S)``.
        """
        B, T = h.shape[:2]
        device = h.device
        if position_ids is None:
            position_ids = torch.arange(offset, offset + T, device=device)[None]  # (1, T)
            if self.config.position_dims == 2:  # GLM's second id: 0 outside the blanks
                position_ids = torch.stack([position_ids, torch.zeros_like(position_ids)], dim=-1)
        elif position_ids.dim() == 1:
            position_ids = position_ids[None]
        if position_ids.shape[1] != T or position_ids.shape[0] not in (1, B):
            raise ValueError(
                f"position_ids has shape {tuple(position_ids.shape)}; expected (B|1, T) = ({B}|1, {T})"
                + (" with a last dimension of 2 (position_dims=2)." if self.config.position_dims == 2 else ".")
            )
        past = caches[0].self_attn if caches else None
        q_index = torch.arange(offset, offset + T, device=device)
        k_index, k_pos = q_index, position_ids
        if past is not None and past.k is not None:  # keys this call attends to: those kept, then the new ones
            k_index = torch.cat([past.index, q_index])
            if past.positions is not None:
                b = max(past.positions.shape[0], position_ids.shape[0])
                k_pos = torch.cat([past.positions.expand(b, *past.positions.shape[1:]),
                                   position_ids.expand(b, *position_ids.shape[1:])], dim=1)
        h = self.positions.embed(h, position_ids)
        if self.embed_norm is not None:
            h = self.embed_norm(h)
        h = self.dropout(h)
        # computed once per stack and shared by every layer (T5 buckets, ALiBi)
        bias = combine(bias, self.positions.relative_bias(position_ids, k_pos))
        if key_mask is not None:
            bias = combine(bias, padding_bias(key_mask[:, k_index]))
        pattern = self._pattern(q_index, k_index, causal)
        rope = self.positions.rotation(position_ids)
        for i, block in enumerate(self.blocks):
            h = block(
                h, bias=bias, causal=causal, rope=rope, context=context, context_bias=context_bias,
                cache=caches[i] if caches is not None else None, pattern=pattern, positions=position_ids,
            )
        return self.final_norm(h) if self.final_norm is not None else h


def _check_ids(ids: torch.Tensor, config: ModelConfig, name: str) -> None:
    if ids.dim() != 2:
        raise ValueError(f"{name} must be a (B, T) tensor of token ids, got shape {tuple(ids.shape)}.")
    if ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must hold integer token ids, got dtype {ids.dtype}.")
    if torch.compiler.is_compiling():  # value checks would break the compiled graph; eager runs check them
        return
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= config.vocab_size):
        raise ValueError(
            f"{name} holds token ids outside [0, {config.vocab_size}) (min {int(ids.min())}, max {int(ids.max())}); "
            "encode with the tokenizer the model was built for, or raise vocab_size."
        )


def _check_length(total: int, config: ModelConfig, extrapolate: bool, name: str) -> None:
    if total > config.max_seq_len and not extrapolate:
        raise ValueError(
            f"{name} reaches length {total}, longer than the model's context max_seq_len={config.max_seq_len}; "
            "crop the input to the last max_seq_len tokens, build the model with a larger max_seq_len, "
            "or pass extrapolate=True to evaluate past the training length on purpose."
        )


class _LMHead(nn.Module):
    """Shared pieces of both models: token embedding and output projection (tied or not)."""

    def _embed(self, ids: torch.Tensor, embedding: nn.Embedding) -> torch.Tensor:
        """Token embeddings ``(B, T) -> (B, T, D)``, times ``config.embed_scale`` (Gemma: ``sqrt(D)``).

        The scale is cast to the table's dtype first, as Gemma does; a tied head reads the unscaled table.
        """
        h = embedding(ids)
        scale = self.config.embed_scale
        return h * torch.tensor(scale, dtype=h.dtype, device=h.device) if scale != 1.0 else h

    def _init_head(self, config: ModelConfig) -> None:
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, 0.0, config.init_std)

    def _logits(self, h: torch.Tensor, embedding: nn.Embedding) -> torch.Tensor:
        h = h * self.config.logit_scale if self.config.logit_scale != 1.0 else h
        return self.lm_head(h) if self.lm_head is not None else F.linear(h, embedding.weight)  # (B, T, V)


class DecoderLM(_LMHead):
    """Decoder-only language model: a causal decoder, or a prefix decoder when ``config.mask == 'prefix'``.

    ``model(input_ids)`` -> logits ``(B, T, V)``. Optional: ``prefix_len`` (int or ``(B,)``; prefix
    decoders only), ``attention_mask`` ``(B, S)`` with 0 on padding (``S`` counts cached tokens too),
    ``position_ids`` ``(B|1, T)`` (``(B|1, T, 2)`` with ``position_dims=2``; default: each token's index,
    continuing after the cache), ``cache`` from :meth:`new_cache` for incremental decoding,
    ``extrapolate=True`` to run past ``max_seq_len``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.arch != "decoder":
            raise ValueError(f"DecoderLM needs arch='decoder', got {config.arch!r}; use build_model(config).")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        nn.init.normal_(self.tok_emb.weight, 0.0, config.init_std)
        self.decoder = Stack(config, config.n_layers, bidirectional=False, cross_attention=False, stack="decoder")
        self._init_head(config)

    def new_cache(self) -> list[LayerCache]:
        return [LayerCache(self.config.sliding_window) for _ in self.decoder.blocks]

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        prefix_len: torch.Tensor | int | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: list[LayerCache] | None = None,
        extrapolate: bool = False,
    ) -> torch.Tensor:
        cfg = self.config
        _check_ids(input_ids, cfg, "input_ids")
        B, T = input_ids.shape
        offset = cache[0].self_attn.seen if cache else 0
        _check_length(offset + T, cfg, extrapolate or cfg.sliding_window is not None, "input_ids")
        if prefix_len is not None and cfg.mask != "prefix":
            raise ValueError(
                "prefix_len was given but this is a causal decoder (config.mask='causal'); convert it with "
                "llmcourse.models.to_prefix_decoder(model) to use a prefix mask over the same weights."
            )
        if prefix_len is not None and offset > 0:
            raise ValueError(
                f"prefix_len was given on a cached step ({offset} tokens already in the cache); the prefix is set by "
                "the first, uncached call that encodes it, and later tokens are causal. Leave prefix_len out here."
            )
        causal, bias = True, None
        if cfg.mask == "prefix" and offset == 0:
            if prefix_len is None:
                raise ValueError("a prefix decoder needs prefix_len (an int, or a (B,) tensor of per-example lengths).")
            causal, bias = False, prefix_bias(prefix_len, T, batch_size=B, device=input_ids.device)
        # after the prefix has been encoded into the cache, new tokens are causal again
        if attention_mask is not None and tuple(attention_mask.shape) != (B, offset + T):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}; expected (B, S) = {(B, offset + T)} "
                "(one entry per token, cached tokens included)."
            )
        if attention_mask is not None:
            check_attention_mask(attention_mask, every_row_real=True)
        h = self._embed(input_ids, self.tok_emb)  # (B, T, D)
        h = self.decoder(
            h, offset=offset, position_ids=position_ids, bias=bias, key_mask=attention_mask, causal=causal, caches=cache
        )
        return self._logits(h, self.tok_emb)


class EncoderDecoderLM(_LMHead):
    """Encoder-decoder (original Transformer, T5): ``model(input_ids, decoder_input_ids)`` -> ``(B, T, V)``.

    The encoder sees its whole input (bidirectional); the decoder is causal and
    cross-attends to every encoder position. Padding in the source is hidden by
    ``attention_mask (B, S)``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.arch != "encoder_decoder":
            raise ValueError(f"EncoderDecoderLM needs arch='encoder_decoder', got {config.arch!r}; use build_model(config).")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        nn.init.normal_(self.tok_emb.weight, 0.0, config.init_std)
        self.dec_emb = None
        if not config.share_embeddings:
            self.dec_emb = nn.Embedding(config.vocab_size, config.d_model)
            nn.init.normal_(self.dec_emb.weight, 0.0, config.init_std)
        self.encoder = Stack(config, config.resolved_n_encoder_layers, bidirectional=True, cross_attention=False, stack="encoder")
        self.decoder = Stack(config, config.n_layers, bidirectional=False, cross_attention=True, stack="decoder")
        self._init_head(config)

    @property
    def decoder_embedding(self) -> nn.Embedding:
        return self.dec_emb if self.dec_emb is not None else self.tok_emb

    def new_cache(self) -> list[LayerCache]:
        return [LayerCache(self.config.sliding_window) for _ in self.decoder.blocks]

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        extrapolate: bool = False,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Shapes: ``(B, S) -> (B, S, D)``; ``position_ids`` ``(B|1, S)``, default ``arange(S)``."""
        _check_ids(input_ids, self.config, "input_ids")
        _check_length(input_ids.shape[1], self.config, extrapolate, "input_ids")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids {tuple(input_ids.shape)}; they must match.")
        if attention_mask is not None:
            check_attention_mask(attention_mask, every_row_real=True)
        return self.encoder(self._embed(input_ids, self.tok_emb), position_ids=position_ids, key_mask=attention_mask, causal=False)

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: list[LayerCache] | None = None,
        extrapolate: bool = False,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Shapes: ``decoder_input_ids (B, T)``, ``memory (B, S, D)`` -> logits ``(B, T, V)``.

        ``position_ids`` ``(B|1, T)``: the decoder tokens' positions (default: their index, after the cache).
        """
        _check_ids(decoder_input_ids, self.config, "decoder_input_ids")
        if memory.shape[0] != decoder_input_ids.shape[0]:
            raise ValueError(
                f"batch sizes differ: the encoder output has {memory.shape[0]} examples, decoder_input_ids "
                f"{decoder_input_ids.shape[0]}; pass one decoder sequence per source sequence."
            )
        offset = cache[0].self_attn.seen if cache else 0
        _check_length(offset + decoder_input_ids.shape[1], self.config, extrapolate, "decoder_input_ids")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(memory.shape[:2]):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the encoder output covers "
                f"{tuple(memory.shape[:2])} (B, S) source positions; pass the mask the source was encoded with."
            )
        if attention_mask is not None:
            check_attention_mask(attention_mask, every_row_real=True)
        context_bias = None
        if attention_mask is not None:
            context_bias = padding_bias(attention_mask)
            # masked source positions get zero attention weight, but 0 * nan is nan: clear whatever they hold
            memory = memory.masked_fill(attention_mask[..., None] == 0, 0.0)
        h = self.decoder(
            self._embed(decoder_input_ids, self.decoder_embedding), offset=offset, position_ids=position_ids, causal=True,
            context=memory, context_bias=context_bias, caches=cache,
        )
        return self._logits(h, self.decoder_embedding)

    def forward(
        self,
        input_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        extrapolate: bool = False,
        position_ids: torch.Tensor | None = None,
        decoder_position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if input_ids.shape[0] != decoder_input_ids.shape[0]:
            raise ValueError(
                f"batch sizes differ: input_ids has {input_ids.shape[0]} examples, decoder_input_ids "
                f"{decoder_input_ids.shape[0]}; pass one decoder sequence per source sequence."
            )
        memory = self.encode(input_ids, attention_mask, extrapolate, position_ids=position_ids)
        return self.decode(
            decoder_input_ids, memory, attention_mask, extrapolate=extrapolate, position_ids=decoder_position_ids
        )


def build_model(config: ModelConfig, seed: int | None = None) -> nn.Module:
    """The model ``config.arch`` names, initialised under ``seed`` when one is given."""
    if seed is not None:
        torch.manual_seed(seed)
    if config.arch == "decoder":
        return DecoderLM(config)
    return EncoderDecoderLM(config)


def load_model(path) -> nn.Module:
    """Build the model a checkpoint file describes (its own config) and load its weights."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt.config)
    load_weights(model, ckpt)
    return model


def to_prefix_decoder(model: DecoderLM) -> DecoderLM:
    """The survey's tip, made explicit: a causal decoder becomes a prefix decoder by changing its mask only.

    Returns a new model that *shares* every parameter with ``model``; only
    ``config.mask`` differs, so with an empty prefix it computes exactly what
    ``model`` computes. Position encodings are kept as they are: T5-style
    relative buckets keep their causal form (a future key inside the prefix
    falls in the offset-0 bucket), because the bidirectional form would map the
    learned table's entries to other offsets. A prefix decoder built from
    scratch (``mask='prefix'``) uses the bidirectional buckets instead.
    """
    if not isinstance(model, DecoderLM):
        raise ValueError(f"to_prefix_decoder converts a DecoderLM, got {type(model).__name__}.")
    converted = copy.copy(model)  # shallow: same submodules, same parameters
    converted._modules = dict(model._modules)
    converted.config = model.config.replace(mask="prefix")
    return converted
