"""The web demo as a Hugging Face Space runs it (`python app.py`, Gradio): the model is the folder or Hub model id in
the MAGTKD_MODEL environment variable. On your machine: `magtkd-hf app MODEL_DIR` (see README, "Your own video")."""

from magtkd_hf.apps.web import EmotionApp, build_demo, model_from_environment, serve

demo = build_demo(EmotionApp(model_from_environment()))

if __name__ == "__main__":
    serve(demo)
