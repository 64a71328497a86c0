"""Where a call's served verdicts go: counted, recorded in the prediction log, handed to shadow scoring.

Request handling (serving.classify, serving.oip) calls back into this while it
answers, so it lives below the servicers: a call goes servicers -> request
handling -> here, never back up into the servicers. Canary routing is here
for the same reason (request handling asks it which model answers each message).
"""

from __future__ import annotations

import threading

from serving.classify import Canary, VerdictLog
from serving.prediction_log import PredictionLog
from serving.rollout import CHALLENGER, CHAMPION, Models, Policy
from serving.shadow import ShadowJob, ShadowScorer


class VerdictSink:
    def __init__(self, predictions: PredictionLog | None, policy: Policy, shadow: ShadowScorer | None):
        self.predictions, self.policy, self.shadow = predictions, policy, shadow
        # Verdicts returned to callers, by the role of the model that gave them (for /metrics).
        self.served = {CHAMPION: 0, CHALLENGER: 0}
        self._lock = threading.Lock()

    def log(self, api: str, started: float, models: Models | None = None, role: str = CHAMPION) -> VerdictLog:
        """What happens to one call's served verdicts (`started`: its perf_counter()), given by the `role` model.

        Counted; recorded in the prediction log (when it is on); and handed to the shadow scorer for the model
        that did not answer, when there is one. Only appends to queues: nothing here waits.
        """
        predictions, served, lock = self.predictions, self.served, self._lock
        other, other_role = models.other(role) if models is not None else (None, CHAMPION)
        shadow = self.shadow if other is not None and self.policy.shadow_share > 0 else None

        def record(model, client_ids, texts, probabilities, labels, verdict_ids) -> None:
            with lock:
                served[role] += len(verdict_ids)
            if predictions is not None:
                predictions.record(api, started, model, client_ids, texts, probabilities, labels, verdict_ids, role=role)
            if shadow is not None:
                shadow.submit(ShadowJob(other, other_role, api, client_ids, texts, labels, verdict_ids))

        return record

    def canary(self, models: Models, api: str, started: float) -> Canary | None:
        """Canary routing of a stream's messages to the challenger, when this server routes any now."""
        if self.policy.canary_share(models) <= 0.0:
            return None
        policy = self.policy

        def answers(messages) -> list[bool] | None:
            roles = policy.roles_for(models, [m.id for m in messages], [m.text for m in messages])
            return None if roles is None else [role == CHALLENGER for role in roles]

        return models.scoring_challenger, self.log(api, started, models, CHALLENGER), answers
