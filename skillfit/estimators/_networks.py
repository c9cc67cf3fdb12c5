"""Torch modules the estimators train: a skilled backbone plus a task-masked head.

Pure torch, no scikit-learn: the estimators build these and run them.
"""

from __future__ import annotations

import inspect

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..skills import TaskContext

if TYPE_CHECKING:
    from ..backbones import Backbone

POOLINGS = ("mean", "last", "first")


def pool_hidden_states(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Reduce ``(batch, seq, dim)`` hidden states to ``(batch, dim)``.

    ``"mean"`` averages the unpadded tokens, ``"first"`` takes the first token (CLS),
    ``"last"`` takes the last unpadded token, whatever the padding side.
    """
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(device=hidden.device, dtype=hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
    if pooling == "first":
        return hidden[:, 0]
    if pooling == "last":
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (positions * attention_mask).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")


def hidden_states(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden states of the encoder (encoder-decoders) or of the base transformer."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        model = model.get_encoder()
    base = getattr(model, "base_model", model)
    return base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def layer_mean_states(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Each text's mean-pooled hidden states, averaged over the transformer's layers: ``(batch, hidden)``.

    The encoder's layers for encoder-decoders. Every layer's output (not the embeddings)
    counts once, so the middle layers, which tell apart text sources better than the
    last (``docs/transfer.md``, "The task identifier"), weigh in.
    """
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        model = model.get_encoder()
    base = getattr(model, "base_model", model)
    layers = base(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states[1:]
    return torch.stack([pool_hidden_states(states, attention_mask, "mean") for states in layers]).mean(dim=0)


def prepend_task_prompts(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, tasks: torch.Tensor,
    descriptions: torch.Tensor, context: TaskContext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input embeddings with each row's task-description vector as a first, soft-prompt token.

    Unknown tasks (-1) get the mean description. Call inside ``context.tasks(tasks)``.
    Returns ``(inputs_embeds, attention_mask)``.
    """
    embeddings = model.get_input_embeddings()(input_ids)
    device_tasks = tasks.to(embeddings.device)
    prompts = context.per_task(device_tasks, lambda known: descriptions[known], lambda: descriptions.mean(dim=0))
    embeddings = torch.cat([prompts.unsqueeze(1).to(embeddings.dtype), embeddings], dim=1)
    return embeddings, torch.cat([attention_mask.new_ones(len(attention_mask), 1), attention_mask], dim=1)


class BlockHead(nn.Module):
    """A linear head over the union of labels, stored as blocks of label rows.

    Labels added later (``adapt``) get a new block, so the rows and the arithmetic of
    the labels learned before stay exactly as they were. ``label_order`` maps the
    sorted ``classes_`` to positions in the concatenated blocks.
    """

    def __init__(self, hidden_size: int, n_labels: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(hidden_size, n_labels)])
        self.register_buffer("label_order", torch.arange(n_labels))

    def add_block(self, n_new: int, label_order: torch.Tensor) -> nn.Linear:
        """Append ``n_new`` label rows; ``label_order`` is the new sorted-to-block mapping."""
        block = nn.Linear(self.blocks[0].in_features, n_new).to(self.label_order.device)
        self.blocks.append(block)
        self.label_order = label_order.to(self.label_order.device)
        return block

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        pooled = pooled.to(self.blocks[0].weight.dtype)  # a bfloat16 backbone's states meet the float32 head
        logits = torch.cat([block(pooled) for block in self.blocks], dim=-1)
        return logits if len(self.blocks) == 1 else logits[:, self.label_order]


class SkilledClassifierNetwork(nn.Module):
    """A backbone with skills, pooling and one head over the union of labels.

    Each task only scores the labels it was trained with: the other logits are set to
    ``-inf``, so their probabilities are exactly zero (``docs/guide.md``, "Inputs").
    Task -1 (unseen in training) may score every label.

    Parameters
    ----------
    backbone : nn.Module
        Transformer with skill layers, returning ``last_hidden_state``.
    context : TaskContext
        The task-id holder of the backbone's skill layers.
    hidden_size : int
        Width of the backbone's hidden states.
    label_mask : BoolTensor of shape (n_tasks, n_classes)
        ``label_mask[t, c]`` is True when task ``t`` may predict class ``c``.
    pooling : {"mean", "last", "first"}
        How to reduce token states to one vector per text.
    task_descriptions : Tensor of shape (n_tasks, hidden_size), optional
        Task-description vectors (PEMT). They are prepended to each text as a soft
        prompt token and given to the skill layers' gates through the context.
    """

    def __init__(
        self,
        backbone: nn.Module,
        context: TaskContext,
        hidden_size: int,
        label_mask: torch.Tensor,
        pooling: str,
        task_descriptions: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.context = context
        self.pooling = pooling
        self.head = BlockHead(hidden_size, label_mask.shape[1])
        self.register_buffer("label_mask", label_mask.clone())
        _registered_descriptions(self, context, task_descriptions)

    def structure(self) -> dict[str, Any]:
        """What :meth:`from_structure` needs besides a backbone: pooling and the shapes of head, mask, descriptions."""
        descriptions = self.task_descriptions
        return {
            "pooling": self.pooling,
            "head_blocks": [block.out_features for block in self.head.blocks],
            "label_mask_shape": list(self.label_mask.shape),
            "descriptions_shape": None if descriptions is None else list(descriptions.shape),
        }

    @classmethod
    def from_structure(cls, backbone: Backbone, context: TaskContext, structure: dict[str, Any]) -> "SkilledClassifierNetwork":
        """An untrained network of the saved shapes around ``backbone.model`` (weights loaded afterwards)."""
        shape, blocks = structure["descriptions_shape"], structure["head_blocks"]
        n_tasks, n_classes = structure["label_mask_shape"]
        network = cls(
            backbone.model, context, backbone.config.hidden_size, torch.zeros((n_tasks, blocks[0]), dtype=torch.bool),
            structure["pooling"], None if shape is None else torch.zeros(shape),
        )
        for n_labels in blocks[1:]:  # label blocks added by adapt()
            network.head.add_block(n_labels, torch.arange(sum(blocks)))
        network.label_mask = torch.zeros((n_tasks, n_classes), dtype=torch.bool)
        return network

    def _hidden_states(self, input_ids, attention_mask, tasks):
        if self.task_descriptions is None:
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        embeddings, prompt_mask = prepend_task_prompts(
            self.backbone, input_ids, attention_mask, tasks, self.task_descriptions, self.context
        )
        hidden = self.backbone(inputs_embeds=embeddings, attention_mask=prompt_mask).last_hidden_state
        return hidden[:, 1:]  # the text's own tokens are pooled, not the prompt

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """Masked logits of shape ``(batch, n_classes)``; ``tasks`` is a CPU LongTensor (-1: unknown)."""
        with self.context.tasks(tasks):
            hidden = self._hidden_states(input_ids, attention_mask, tasks)
            pooled = pool_hidden_states(hidden, attention_mask, self.pooling)
            logits = self.head(pooled).float()
            device_tasks = tasks.to(logits.device, non_blocking=True)
            # An unknown task may score every label.
            allowed = self.context.per_task(device_tasks, lambda known: self.label_mask[known], True)
        return logits.masked_fill(~allowed, float("-inf"))



def _registered_descriptions(module: nn.Module, context: TaskContext, descriptions: torch.Tensor | None) -> None:
    if descriptions is not None:
        module.task_descriptions = nn.Parameter(descriptions.clone())
        context.task_descriptions = module.task_descriptions
    else:
        module.task_descriptions = None


class SkilledSeq2SeqNetwork(nn.Module):
    """A generation model (encoder-decoder or causal LM) with skills, for text-to-text tasks.

    Parameters
    ----------
    backbone : nn.Module
        ``...ForConditionalGeneration`` or ``...ForCausalLM`` with skill layers.
    context : TaskContext
        The task-id holder of its skill layers.
    task_descriptions : Tensor of shape (n_tasks, hidden_size), optional
        PEMT's description vectors, prepended as a soft prompt token.
    """

    def __init__(self, backbone: nn.Module, context: TaskContext, task_descriptions: torch.Tensor | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.context = context
        self.decoder_only = not backbone.config.is_encoder_decoder
        _registered_descriptions(self, context, task_descriptions)
        output_layer = backbone.get_output_embeddings() if hasattr(backbone, "get_output_embeddings") else None
        if self.decoder_only and isinstance(output_layer, nn.Linear):
            output_layer.register_forward_pre_hook(_contiguous_input)

    def structure(self) -> dict[str, Any]:
        """What :meth:`from_structure` needs besides a backbone: the shape of the task descriptions."""
        descriptions = self.task_descriptions
        return {"descriptions_shape": None if descriptions is None else list(descriptions.shape)}

    @classmethod
    def from_structure(cls, backbone: Backbone, context: TaskContext, structure: dict[str, Any]) -> "SkilledSeq2SeqNetwork":
        """An untrained network of the saved shapes around ``backbone.model`` (weights loaded afterwards)."""
        shape = structure["descriptions_shape"]
        return cls(backbone.model, context, None if shape is None else torch.zeros(shape))

    def _inputs(self, input_ids, attention_mask, tasks) -> dict[str, torch.Tensor]:
        if self.task_descriptions is None:
            return {"input_ids": input_ids, "attention_mask": attention_mask}
        embeddings, mask = prepend_task_prompts(
            self.backbone, input_ids, attention_mask, tasks, self.task_descriptions, self.context
        )
        return {"inputs_embeds": embeddings, "attention_mask": mask}

    def forward(self, input_ids, attention_mask, labels, tasks) -> torch.Tensor:
        """Mean cross-entropy over the target tokens (labels of -100 are ignored).

        Decoder-only rows must be left-padded with their target at the end: only the
        logits that predict target tokens are computed (the vocabulary projection of the
        prompt's positions is skipped).
        """
        with self.context.tasks(tasks):
            inputs = self._inputs(input_ids, attention_mask, tasks)
            if not self.decoder_only:
                return self.backbone(**inputs, labels=labels).loss
            logits, answer_labels = self._answer_logits(inputs, labels)
            return nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), answer_labels.reshape(-1), ignore_index=-100
            )

    def label_log_likelihoods(self, input_ids, attention_mask, labels, tasks) -> torch.Tensor:
        """Per row, the summed log-probability of its label tokens (``-100`` elsewhere).

        Rows are laid out as for :meth:`forward`: decoder-only rows left-padded with the
        labelled answer at their end; encoder-decoder rows score ``labels`` as decoder targets.
        """
        with self.context.tasks(tasks):
            inputs = self._inputs(input_ids, attention_mask, tasks)
            if not self.decoder_only:
                return _summed_log_probabilities(self.backbone(**inputs, labels=labels).logits, labels)
            return _summed_log_probabilities(*self._answer_logits(inputs, labels))

    def _answer_logits(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits that predict the last ``K`` positions of left-padded rows, and those ``K`` labels.

        ``K`` is the longest answer (labels other than -100) in the batch. Positions are
        numbered from each row's first real token, as ``generate`` numbers left-padded
        rows, so a row is read as it would be without padding.
        """
        mask = inputs["attention_mask"]
        device = (inputs["input_ids"] if "input_ids" in inputs else inputs["inputs_embeds"]).device
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0).to(device)
        answer_length = max(1, int((labels != -100).sum(dim=1).max()))
        kept = answer_length + 1  # the logit before each answer token predicts it; the last one predicts nothing
        # A model without logits_to_keep computes every position's logits; the last ones are taken.
        extra = {"logits_to_keep": kept} if _accepts(self.backbone, "logits_to_keep") else {}
        logits = self.backbone(**inputs, position_ids=positions, **extra).logits
        return logits[:, -kept:-1], labels[:, -answer_length:].to(logits.device)

    def generate(self, input_ids, attention_mask, tasks, **generation) -> torch.Tensor:
        """Generated token ids, without the prompt."""
        with self.context.tasks(tasks):
            inputs = self._inputs(input_ids, attention_mask, tasks)
            output = self.backbone.generate(**inputs, **generation)
        if self.decoder_only and "input_ids" in inputs:
            output = output[:, input_ids.shape[1]:]
        return output


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    """The output layer's input as one block: transformers hands it the last positions as a strided view,
    and torch's CPU kernels then copy the whole (vocabulary x hidden) weight to float32 for a bfloat16
    matmul (+0.5 GiB for a 0.5B model); a copy of the few kept positions costs almost nothing."""
    return (args[0].contiguous(), *args[1:]) if args and isinstance(args[0], torch.Tensor) else None


def _summed_log_probabilities(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over each row of ``log p(label)`` where a label is not ``-100``; ``logits`` predict ``labels``."""
    scored = labels != -100
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(scored, picked, torch.zeros_like(picked)).sum(dim=1)


def _accepts(model: nn.Module, argument: str) -> bool:
    """Whether ``model.forward`` takes ``argument`` by name."""
    return argument in inspect.signature(model.forward).parameters
