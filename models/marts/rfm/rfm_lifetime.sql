{{ rfm_model() }}
