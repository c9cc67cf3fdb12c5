"""Training noise of the routers: drawn once per router and step, the same on every rank."""

from __future__ import annotations


import torch



class RoutingNoiseMixin:
    """``uniform_noise`` of :class:`~skillfit.skills.TaskContext`."""

    def uniform_noise(self, owner: torch.nn.Module, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        """Uniform [0, 1) noise of ``shape`` for ``owner``, drawn once per :meth:`tasks` scope.

        Owners draw for their whole per-task table and index the batch's rows, so the
        sample of a task does not depend on which other tasks share the batch. With the
        scope's ``noise_seed``, the owners draw in turn from one generator so seeded.
        Polytropon's router turns it into relaxed-Bernoulli samples; drawing once
        per scope gives a forward pass recomputed by gradient checkpointing the
        same sample.

        Parameters
        ----------
        owner : nn.Module
            What the noise is for (a router); each owner gets its own sample per scope.
        shape : torch.Size or tuple of int
            Shape of the sample, usually the owner's whole per-task table.
        like : Tensor
            A tensor whose device and dtype the sample takes.

        Returns
        -------
        Tensor of shape ``shape``
            The owner's sample of this scope; a fresh sample outside any
            :meth:`~skillfit.skills.TaskContext.tasks` scope.

        See Also
        --------
        skillfit.skills.PolyRouter : The router that draws this noise in training.
        skillfit.skills.TaskContext.tasks : The scope, and its ``noise_seed``.

        Examples
        --------
        >>> import torch
        >>> from skillfit.skills import TaskContext
        >>> context, router, like = TaskContext(), torch.nn.Module(), torch.zeros(1)
        >>> with context.tasks([0, 1], noise_seed=0):
        ...     first = context.uniform_noise(router, (3, 4), like)
        ...     print(first.shape, first is context.uniform_noise(router, (3, 4), like))
        torch.Size([3, 4]) True
        >>> with context.tasks([1], noise_seed=0):   # same seed, same sample
        ...     torch.equal(first, context.uniform_noise(router, (3, 4), like))
        True
        """
        if self._noise is None:  # outside a tasks() scope
            return torch.rand(shape, device=like.device, dtype=like.dtype)
        key = id(owner)
        if key not in self._noise:
            if self._noise_seed is not None and self._noise_generator is None:
                self._noise_generator = torch.Generator(device=like.device).manual_seed(self._noise_seed)
            self._noise[key] = torch.rand(shape, generator=self._noise_generator, device=like.device, dtype=like.dtype)
        return self._noise[key]
