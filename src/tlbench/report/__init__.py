"""Study reports: MLflow runs -> tidy table -> summary, recommendation, figures -> Markdown/HTML/LaTeX.

collect (store -> table) and build (orchestration) touch the outside world; summarize, recommend and
figures_data are pure functions of the table; draw and render only turn their results into files.
"""
