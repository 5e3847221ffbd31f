"""nbgrader configuration of the labmail course (the course root is this folder).

The notebooks of notebooks/ are the nbgrader *source* notebooks: one assignment per step, named after its folder
(00-demarrage … 13-autodiscover); 99-formateur is for instructors and is not released. `make student` generates the
student versions into release/. See the README, section "Noter avec nbgrader".
"""

from labmail import nbgrader_plugins

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

c.CourseDirectory.course_id = "labmail"
c.CourseDirectory.source_directory = "notebooks"
# reponses.json is the quiz's working copy beside a notebook (the instructor's own, in notebooks/, too): never
# released, never collected. The answers travel inside the notebook (the quiz cell's output) and labmail's plugins
# give them to the grading (labmail/nbgrader_plugins.py).
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "reponses.json", "classe.csv"]

# French stubs in the student version; an exercise left as distributed stops "Run All" with a French message.
c.ClearSolutions.code_stub = {"python": "# VOTRE CODE ICI\ngrading.a_faire()"}
c.ClearSolutions.text_stub = "VOTRE RÉPONSE ICI"

# Quiz answer cells released as how-to-answer comments; quiz answers read from the submitted notebook at autograde.
c.GenerateAssignment.preprocessors = nbgrader_plugins.generate_preprocessors()
c.Autograde.sanitize_preprocessors = nbgrader_plugins.sanitize_preprocessors()
c.Autograde.autograde_preprocessors = nbgrader_plugins.autograde_preprocessors()

# Grading runs the notebooks in the course's kernel, with time for the lab: a step sends and reads real mail.
c.ExecutePreprocessor.kernel_name = "python3"
c.Execute.timeout = 120
c.ExecutePreprocessor.timeout = 120
c.Execute.startup_timeout = 120
