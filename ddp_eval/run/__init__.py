"""The job: plan, predict, resume, dry run and doctor."""
