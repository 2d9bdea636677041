"""What a run is made of: experiment plumbing (``experiment``), the Brain base that calls the
strategies' hooks (``finetuning``), the CTC and utterance-level tasks (``ctc``, ``utterance``),
LM decoding (``lm``), SSL pretraining (``pretraining``) and what a run reports
(``reporting``)."""
