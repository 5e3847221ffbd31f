"""nbgrader configuration of the labmail course (the course root is this folder).

The notebooks of notebooks/ are the nbgrader *source* notebooks: one assignment per step, named after its folder
(00-demarrage … 13-autodiscover); 99-formateur is for instructors and is not released. `make student` generates the
student versions into release/. See the README, section "Noter avec nbgrader".
"""

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

c.CourseDirectory.course_id = "labmail"
c.CourseDirectory.source_directory = "notebooks"
# The quiz widget records answers in reponses.json beside the notebook: never copy one from the sources (it would
# overwrite the student's at autograde), never release one.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "reponses.json", "classe.csv"]

# French stubs in the student version.
c.ClearSolutions.code_stub = {"python": "# VOTRE CODE ICI\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "VOTRE RÉPONSE ICI"

# Grading runs the notebooks in the course's kernel, with time for the lab: a step sends and reads real mail.
c.ExecutePreprocessor.kernel_name = "python3"
c.Execute.timeout = 120
c.ExecutePreprocessor.timeout = 120
c.Execute.startup_timeout = 120
