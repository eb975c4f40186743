{{ stg_media_log('media_clicks', 'click_id') }}
